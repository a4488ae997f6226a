"""The serving image run with Docker the way SageMaker runs it: ``docker run IMAGE serve`` with the model folders
mounted read-only at ``/opt/ml/models``. For the local endpoint (``--image``), the demo and the image tests.

Same shape as :class:`genesig.server_process.ServerProcess`: ``start`` waits for ``/ping``, ``url`` is where it
answers, ``stop`` stops it and says what was left. Docker is driven through its command line, which every engine
ships; no Python SDK is needed.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from genesig.client import ModelServerClient
from genesig.errors import GenesigError
from genesig.server_process import free_port

logger = logging.getLogger(__name__)

# Where SageMaker mounts the model folders of a multi-model endpoint.
CONTAINER_MODELS_DIR = "/opt/ml/models"
CONTAINER_PORT = 8080
STOP_GRACE_S = 30


class DockerUnavailable(GenesigError):
    status = 503
    code = "docker_unavailable"


def docker(*args: str, timeout_s: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the docker command line; a missing client or engine is one clear error, not a traceback."""
    executable = shutil.which("docker")
    if executable is None:
        raise DockerUnavailable("the docker command is not installed; install Docker, or run without --image")
    result = subprocess.run([executable, *args], capture_output=True, text=True, timeout=timeout_s)
    if check and result.returncode != 0:
        raise GenesigError(f"docker {args[0]} failed: {result.stderr.strip().splitlines()[-1:] or result.returncode}")
    return result


def check_engine() -> None:
    result = docker("info", "--format", "{{.ServerVersion}}", check=False, timeout_s=30)
    if result.returncode != 0 or not result.stdout.strip():
        raise DockerUnavailable(
            "no Docker engine answers (start dockerd, or set DOCKER_HOST to its socket), or run without --image"
        )


def host_networking() -> bool:
    """An engine without its bridge network (dockerd --bridge=none) can only run containers on the host's network."""
    return docker("network", "inspect", "bridge", check=False, timeout_s=30).returncode != 0


class ContainerServer:
    """The serving image as a container on 127.0.0.1: ``models_dir`` is mounted read-only at /opt/ml/models."""

    def __init__(
        self,
        image: str,
        models_dir: Path,
        *,
        memory_mb: int | None = None,
        env: dict[str, str] | None = None,
        extra_args: list[str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.image = image
        self.models_dir = models_dir.resolve()
        self.memory_mb = memory_mb
        self.env = env or {}
        self.extra_args = extra_args or []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.name = f"genesig-serve-{uuid.uuid4().hex[:12]}"
        self.log_path = log_path
        self.exit_code: int | None = None
        self._running = False

    def run_args(self) -> list[str]:
        """``docker run`` arguments, as SageMaker starts the container: ``serve``, the models mounted read-only."""
        env = dict(self.env)
        args = ["run", "--detach", "--name", self.name, "--volume", f"{self.models_dir}:{CONTAINER_MODELS_DIR}:ro"]
        if host_networking():
            # No bridge: the container shares the host's ports, so it binds to ours on loopback only.
            args += ["--network", "host"]
            env.setdefault("SAGEMAKER_BIND_TO_PORT", str(self.port))
            env.setdefault("GENESIG_HOST", "127.0.0.1")
        else:
            args += ["--publish", f"127.0.0.1:{self.port}:{CONTAINER_PORT}"]
        if self.memory_mb:
            args += ["--memory", f"{self.memory_mb}m"]
        for key, value in sorted(env.items()):
            args += ["--env", f"{key}={value}"]
        return args + self.extra_args + [self.image, "serve"]

    def start(self, timeout_s: float = 120.0) -> ContainerServer:
        check_engine()
        if docker("image", "inspect", self.image, check=False, timeout_s=30).returncode != 0:
            raise GenesigError(f"image {self.image} is not on this Docker engine; build it with ./build_and_push.sh")
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self.models_dir.chmod(0o755)  # the container's user (uid 1000) reads it
        docker(*self.run_args())
        self._running = True
        deadline = time.monotonic() + timeout_s
        with ModelServerClient(self.url, timeout=5) as client:
            while time.monotonic() < deadline:
                if not self.is_running():
                    logs = self.logs()
                    self.stop()
                    raise GenesigError(f"container {self.name} exited during start-up: {logs.strip()[-500:]}")
                if client.ping():
                    logger.info("serving image %s answers at %s (container %s)", self.image, self.url, self.name)
                    return self
                time.sleep(0.3)
        self.stop()
        raise GenesigError(f"container {self.name} was not healthy within {timeout_s:.0f} s")

    def is_running(self) -> bool:
        result = docker("inspect", "--format", "{{.State.Running}}", self.name, check=False, timeout_s=30)
        return result.stdout.strip() == "true"

    def state(self) -> dict[str, object]:
        return dict(json.loads(docker("inspect", "--format", "{{json .State}}", self.name, timeout_s=30).stdout))

    def logs(self) -> str:
        result = docker("logs", self.name, check=False, timeout_s=60)
        return result.stdout + result.stderr

    def stop(self, grace_s: int = STOP_GRACE_S) -> list[int]:
        """``docker stop`` (SIGTERM, then SIGKILL after ``grace_s``); keeps the exit code and the log; removes it.

        Returns no pids (a stopped container leaves no process behind), like ``ServerProcess.stop``."""
        if not self._running:
            return []
        docker("stop", "--time", str(grace_s), self.name, check=False, timeout_s=grace_s + 60)
        self.exit_code = int(self.state().get("ExitCode", -1))  # type: ignore[call-overload]
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self.log_path.write_text(self.logs())
        docker("rm", "--force", self.name, check=False, timeout_s=60)
        self._running = False
        return []

    def __enter__(self) -> ContainerServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
