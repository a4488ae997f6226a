"""``genesig serve``: the image's entry point. Starts MMS (through the toolkit), registers the worker pool, starts
the gateway and nginx, and supervises them.

The MMS launcher detaches the JVM, and the JVM leaves its Python processes behind
when it gets SIGTERM. We make this process a child subreaper, so every descendant
is re-parented to us, and on SIGTERM/SIGINT (or when MMS dies) we stop them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import math
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import psutil
import uvloop
from aiohttp import web

from genesig.container.gateway import Gateway
from genesig.container.memory import MemoryStatus, budget_memory, container_memory
from genesig.container.model_server import MMAP_THRESHOLD_BYTES, model_server_environ, state_paths
from genesig.container.nginx import nginx_command, nginx_executable, write_config
from genesig.container.settings import ServingSettings

logger = logging.getLogger(__name__)

_PR_SET_CHILD_SUBREAPER = 36
_M_MMAP_THRESHOLD = -3
STOP_GRACE_S = 10.0
MMS_MAX_PORT = 32766


def become_subreaper() -> bool:
    """Linux only: orphaned descendants are re-parented to us instead of init."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_internal_port(safe_range: str | None) -> int:
    """A free loopback port for MMS, from SageMaker's SAGEMAKER_SAFE_PORT_RANGE ("low-high") when it is set.

    MMS refuses ports above 32766, so the kernel's ephemeral ports (32768+) cannot be used.
    """
    if safe_range:
        low, _, high = safe_range.partition("-")
        candidates = list(range(int(low), min(int(high or low), MMS_MAX_PORT) + 1))
    else:
        candidates = random.sample(range(20000, MMS_MAX_PORT + 1), 200)
    for port in candidates:
        if _port_free(port):
            return port
    raise RuntimeError(f"no free port for the model server (SAGEMAKER_SAFE_PORT_RANGE={safe_range})")


def stop_descendants(grace_s: float = STOP_GRACE_S) -> int:
    """SIGTERM every descendant, SIGKILL those still alive after ``grace_s``; returns how many were stopped.

    Repeats because processes re-parented to us while we stop their parents show up late.
    """
    stopped = 0
    for _ in range(5):
        procs = psutil.Process().children(recursive=True)
        if not procs:
            break
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.terminate()
        _, alive = psutil.wait_procs(procs, timeout=grace_s)
        for proc in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        psutil.wait_procs(alive, timeout=grace_s)
        stopped += len(procs)
    return stopped


def fix_mmap_threshold() -> None:
    """This process's share of ``FIXED_MMAP_THRESHOLD`` (set in the environment for the others): the gateway
    verifies every artifact it loads, weights included."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


def pool_workers(settings: ServingSettings) -> int:
    """The pool's size: the setting, else one worker per CPU this process may use (its affinity and, in a
    container, its cgroup's CPU quota)."""
    if settings.pool_workers:
        return settings.pool_workers
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    with contextlib.suppress(OSError, ValueError):
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    return max(1, cpus)


def memory_probe(settings: ServingSettings) -> MemoryStatus:
    if settings.memory_limit_mb:
        pids = [os.getpid()] + [p.pid for p in psutil.Process().children(recursive=True)]
        return budget_memory(settings.memory_limit_mb * 1024 * 1024, pids)
    return container_memory()


async def _wait_healthy(mms_url: str, launcher: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if launcher.poll() is not None:
                raise RuntimeError(f"model server exited during start-up with status {launcher.returncode}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(mms_url + "/ping", timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"model server not healthy after {timeout_s:.0f} s")


def reap_adopted(own: set[int]) -> int:
    """Reap exited processes that were re-parented to us (we are their subreaper), leaving our own children alone."""
    reaped = 0
    for proc in psutil.Process().children():
        if proc.pid in own:
            continue
        with contextlib.suppress(psutil.Error, ChildProcessError):
            if proc.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(proc.pid, os.WNOHANG)
                reaped += 1
    return reaped


async def _supervise(children: dict[str, subprocess.Popen[bytes]], stop: asyncio.Event) -> int:
    """Wait for a signal (exit 0) or for any child to die (exit 1); reap adopted orphans meanwhile."""
    while not stop.is_set():
        reap_adopted({child.pid for child in children.values()})
        for name, child in children.items():
            if child.poll() is not None:
                logger.error("%s exited with status %s; stopping", name, child.returncode)
                return 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.5)
    logger.info("stopping on signal")
    return 0


async def _run(settings: ServingSettings, mms_port: int, launcher: subprocess.Popen[bytes]) -> int:
    mms_url = f"http://127.0.0.1:{mms_port}"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    nginx = nginx_executable() if settings.front in ("auto", "nginx") else None
    if settings.front == "nginx" and nginx is None:
        raise RuntimeError("GENESIG_FRONT=nginx but no nginx executable was found")
    nginx_state = state_paths(settings)["root"] / "nginx"
    gateway = Gateway(settings, mms_url, lambda: memory_probe(settings), pool_workers(settings))
    runner = web.AppRunner(gateway.app(), access_log=None, handle_signals=False)
    await runner.setup()
    gateway_host, gateway_port = ("127.0.0.1", pick_internal_port(None)) if nginx else (settings.host, settings.port)
    await web.TCPSite(runner, host=gateway_host, port=gateway_port, reuse_address=True).start()
    children = {"model server": launcher}
    try:
        starting = asyncio.create_task(_wait_healthy(mms_url, launcher, settings.startup_timeout_s))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if stopping.done():
            starting.cancel()
            return 0
        stopping.cancel()
        starting.result()
        await gateway.start_pool()
        if nginx:
            config = write_config(settings, nginx_state, mms_port, gateway_port)
            children["nginx"] = subprocess.Popen(nginx_command(nginx, config, nginx_state))
        logger.info(
            "serving on %s:%d through %s (model server on 127.0.0.1:%d)",
            settings.host,
            settings.port,
            "nginx" if nginx else "the gateway",
            mms_port,
        )
        return await _supervise(children, stop)
    finally:
        await runner.cleanup()


def serve(settings: ServingSettings) -> int:
    """Run until SIGTERM/SIGINT or until the model server dies; always stop every child process."""
    fix_mmap_threshold()
    if not become_subreaper():
        logger.warning("could not become a child subreaper; orphaned model backends may survive shutdown")
    paths = state_paths(settings)
    for key in ("logs", "tmp"):
        paths[key].mkdir(parents=True, exist_ok=True)
    mms_port = settings.model_server_port or pick_internal_port(os.environ.get("SAGEMAKER_SAFE_PORT_RANGE"))
    env = model_server_environ(settings, mms_port, dict(os.environ))
    launcher = subprocess.Popen([sys.executable, "-m", "genesig.container.model_server"], env=env, cwd=paths["root"])
    try:
        # uvloop roughly halves the gateway's per-request cost compared with the default asyncio loop.
        return uvloop.run(_run(settings, mms_port, launcher))
    except RuntimeError as exc:
        logger.error("%s", exc)
        return 1
    finally:
        count = stop_descendants()
        logger.info("stopped %d child processes", count)
