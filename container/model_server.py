"""Start Multi Model Server in MME mode through the SageMaker Inference Toolkit, with nothing under /etc or /tmp.

Run as ``python -m genesig.container.model_server`` by ``genesig serve`` with the
environment from :func:`model_server_environ`; it blocks until MMS exits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import warnings
from pathlib import Path

import psutil

from genesig.container.settings import MODEL_SERVER_HEADROOM_BYTES, ServingSettings, settings_environ

MMS_MAIN_CLASS = "com.amazonaws.ml.mms.ModelServer"
JOB_QUEUE_SIZE = 1000
# glibc raises its mmap threshold each time a large block is freed, so a worker that opened a genome-wide model
# keeps the next ones' weights in its heap for good after closing them. A fixed threshold keeps large blocks in
# their own mappings, returned to the system when a signature is closed: memory admission sees what is really free.
MMAP_THRESHOLD_BYTES = 128 * 1024
FIXED_MMAP_THRESHOLD = {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD_BYTES)}
# Workers evaluate tiny matrices: one BLAS thread each, so a pool of one worker per CPU does not oversubscribe.
_SINGLE_THREADED = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def state_paths(settings: ServingSettings) -> dict[str, Path]:
    root = Path(settings.state_dir).resolve()
    return {"root": root, "config": root / "mms.properties", "logs": root / "logs", "tmp": root / "tmp"}


def model_server_environ(settings: ServingSettings, mms_port: int, base: dict[str, str]) -> dict[str, str]:
    """Environment for the toolkit and MMS: MME mode, our handler, a loopback-only port, private state folders."""
    paths = state_paths(settings)
    env = dict(base)
    # The toolkit runs `multi-model-server` by name: find it beside this interpreter even when no venv is active.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), base.get("PATH", os.defpath)])
    env.update(_SINGLE_THREADED)
    env.update(FIXED_MMAP_THRESHOLD)
    env.update(settings_environ(settings))
    env.update(
        {
            "SAGEMAKER_MULTI_MODEL": "true",
            "SAGEMAKER_HANDLER": settings.handler,
            "SAGEMAKER_BIND_TO_PORT": str(mms_port),
            "SAGEMAKER_MODEL_SERVER_VMARGS": settings.jvm_options,
            # MMS reads these over its config file (enable_envvars_config=true): loopback only, the gateway is public.
            "MMS_INFERENCE_ADDRESS": f"http://127.0.0.1:{mms_port}",
            "MMS_MANAGEMENT_ADDRESS": f"http://127.0.0.1:{mms_port}",
            "MMS_MAX_REQUEST_SIZE": str(settings.max_request_bytes + MODEL_SERVER_HEADROOM_BYTES),
            # Every invocation waits in the pool's one queue (100 by default): room for SageMaker's concurrency.
            "MMS_JOB_QUEUE_SIZE": str(JOB_QUEUE_SIZE),
            # MMS's pid file and the backends' unix sockets live in the temp folder: keep them per server.
            "TMPDIR": str(paths["tmp"]),
            "TEMP": str(paths["tmp"]),
            "LOG_LOCATION": str(paths["logs"]),
            "GENESIG_MMS_CONFIG_FILE": str(paths["config"]),
        }
    )
    return env


def _reap_children(_signo: int, _frame: object) -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def main() -> None:
    # The toolkit starts the MMS launcher script without waiting for it and installs its own SIGCHLD reaper only
    # after that script has exited, which leaves a zombie for the server's lifetime; reap from the start.
    signal.signal(signal.SIGCHLD, _reap_children)
    # The toolkit imports pkg_resources, which setuptools deprecates with a warning on every start; the pin
    # setuptools<82 keeps it working, so the warning tells an operator nothing.
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    # The toolkit reads SAGEMAKER_MULTI_MODEL at import time, so import only once the environment is set.
    from sagemaker_inference import model_server

    config_file = os.environ["GENESIG_MMS_CONFIG_FILE"]
    # The toolkit hard-codes /etc/sagemaker-mms.properties; outside a container that path is not ours.
    model_server.MMS_CONFIG_FILE = config_file
    # The toolkit finds "the" MMS JVM among all processes on the machine and refuses to run when there are two;
    # ours is the one started with our config file, so several servers can share a machine (tests, benchmarks).
    model_server._retrieve_mms_server_process = lambda: _our_jvm(config_file)
    model_server.start_model_server(handler_service=os.environ["SAGEMAKER_HANDLER"])


def _our_jvm(config_file: str) -> psutil.Process:
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["status"] != psutil.STATUS_ZOMBIE and MMS_MAIN_CLASS in cmdline and config_file in cmdline:
            return proc
    raise RuntimeError(f"no Multi Model Server process started with {config_file} (yet)")


if __name__ == "__main__":
    main()
