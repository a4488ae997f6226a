"""The worker pool's supervision: register the pool in Multi Model Server, keep it there, say what happens to it.

Multi Model Server replaces a worker that dies by itself (its worker thread reconnects to the pool's server process,
which forks a new worker, after a fixed 1 s back-off); the signatures stay loaded, since they live in the pool's
entries, not in the worker. What it does not recover from quickly is the death of the pool's server process (its
workers then retry with a growing back-off): that is noticed here at once, through a pidfd, and the pool is
registered again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time

import psutil

from genesig.aio_client import AsyncModelServerClient
from genesig.container.pool import POOL_MODEL, PoolPaths
from genesig.errors import ModelServerError

logger = logging.getLogger(__name__)
CHECK_INTERVAL_S = 0.5


def pool_processes(root: int | None = None) -> tuple[int | None, list[int]]:
    """(the pool's server process, its worker processes) under ``root`` (default: this process): Python processes
    started by Multi Model Server with ``--model-name genesig-pool``; the server is the one whose parent is not one
    of them."""
    found: dict[int, int] = {}
    for process in psutil.Process(root).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            args = process.cmdline()
            if "--model-name" in args[:-1] and args[args.index("--model-name") + 1] == POOL_MODEL:
                if process.status() != psutil.STATUS_ZOMBIE:
                    found[process.pid] = process.ppid()
    servers = [pid for pid, parent in found.items() if parent not in found]
    server = servers[0] if len(servers) == 1 else None
    return server, sorted(pid for pid, parent in found.items() if parent == server)


class PoolSupervisor:
    def __init__(self, mms: AsyncModelServerClient, paths: PoolPaths, workers: int, load_timeout_s: float) -> None:
        self.mms = mms
        self.paths = paths
        self.workers = workers
        self.load_timeout_s = load_timeout_s
        self.healthy = False
        self.server_pid: int | None = None
        self.worker_pids: list[int] = []
        self.restarts = 0
        self._task: asyncio.Task[None] | None = None
        self._server_fd: int | None = None
        self._server_died = asyncio.Event()

    async def start(self) -> None:
        await self._register()
        self._task = asyncio.create_task(self._watch())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._unwatch_server()

    async def _register(self) -> None:
        started = time.perf_counter()
        status, body, _ = await self.mms.load(
            POOL_MODEL,
            str(self.paths.model_dir),
            initial_workers=self.workers,
            synchronous=True,
            preload_model="true",
            timeout_s=self.load_timeout_s,
        )
        if status != 200:
            raise ModelServerError(
                f"Multi Model Server refused the worker pool ({status}): {body.decode(errors='replace')[:300]}"
            )
        self.server_pid, self.worker_pids = await asyncio.to_thread(pool_processes)
        self._watch_server()
        self.healthy = True
        logger.info(
            "worker pool up: %d workers %s (server %s) in %.2f s",
            len(self.worker_pids),
            self.worker_pids,
            self.server_pid,
            time.perf_counter() - started,
        )

    def _watch_server(self) -> None:
        """A pidfd on the pool's server process: the event loop hears of its death at once."""
        self._unwatch_server()
        self._server_died.clear()
        if self.server_pid is None or not hasattr(os, "pidfd_open"):
            return
        try:
            fd = os.pidfd_open(self.server_pid)
        except OSError:
            self._server_died.set()
            return
        self._server_fd = fd
        asyncio.get_running_loop().add_reader(fd, self._server_died.set)

    def _unwatch_server(self) -> None:
        if self._server_fd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._server_fd)
            os.close(self._server_fd)
            self._server_fd = None

    async def _watch(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server_died.wait(), timeout=CHECK_INTERVAL_S)
            try:
                server, workers = await asyncio.to_thread(pool_processes)
                if self._server_died.is_set() or server != self.server_pid:
                    await self._restart()
                    continue
                self._note_workers(workers)
            except asyncio.CancelledError:
                raise
            except Exception:  # supervision must outlive any one failure
                logger.exception("worker pool check failed")

    def _note_workers(self, workers: list[int]) -> None:
        gone = sorted(set(self.worker_pids) - set(workers))
        new = sorted(set(workers) - set(self.worker_pids))
        if gone:
            logger.warning("pool worker %s exited; Multi Model Server starts another", ", ".join(map(str, gone)))
        if new:
            logger.info("pool worker %s started (%d running)", ", ".join(map(str, new)), len(workers))
        self.worker_pids = workers

    async def _restart(self) -> None:
        """The pool's server process died: register the pool again (its signatures stay loaded)."""
        self.healthy = False
        self._unwatch_server()
        self.restarts += 1
        logger.warning("the worker pool's server process %s died; registering the pool again", self.server_pid)
        with contextlib.suppress(ModelServerError):
            await self.mms.unload(POOL_MODEL, timeout_s=self.load_timeout_s)
        await self._register()
