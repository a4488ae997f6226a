"""Loading and unloading signatures into the worker pool: the protocol of :mod:`genesig.container.pool`.

A load verifies the artifact (schema, checksums, tensor shapes and values), admits it by memory, writes its entry
and then its accept flag: no process starts, and the first worker asked for it opens it. An unload removes the accept
flag (new invocations answer 404 at once), waits at a fence until every worker has answered what it already took,
removes the entry, and answers once every worker has dropped the signature. Unloads that arrive together share
one fence. One load or unload of a name at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from genesig.aio_client import AsyncModelServerClient
from genesig.artifact import Manifest, load_model_dir
from genesig.artifact.package import check_model_folder, weights_mappable
from genesig.container.admission import Admission
from genesig.container.pool import POOL_MODEL, Entry, PoolRegistry, check_name
from genesig.container.settings import DRAIN_HEADER, ServingSettings
from genesig.errors import BadRequest, Conflict, ModelNotFound, ModelServerError

logger = logging.getLogger(__name__)
# Between refusing new invocations of a name and queueing the fence: lets a request that nginx let through just
# before reach Multi Model Server's queue ahead of the markers (nginx hands it on within a millisecond; the rest is
# margin for a busy machine). One arriving later still meets a worker: answered, or 404 once the entry is gone.
SETTLE_S = 0.02
FENCE_POLL_S = 0.001
MARKER_RESEND_S = 0.1
# After the release, how long to wait for every worker to answer its marker (each drops what was removed first).
RELEASE_WAIT_S = 5.0


@dataclass(frozen=True)
class Loaded:
    """What the gateway keeps per loaded signature: its entry, not its manifest (thousands of manifests of hundreds
    of genes would be the gateway's largest memory, charged to no one; describe reads it again)."""

    entry: Entry
    loaded_at: float


class Lifecycle:
    def __init__(
        self,
        settings: ServingSettings,
        registry: PoolRegistry,
        admission: Admission,
        mms: AsyncModelServerClient,
        workers: int,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.admission = admission
        self.mms = mms
        self.workers = workers
        self.loaded: dict[str, Loaded] = {}
        self.closing: set[str] = set()
        self._name_locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        self._to_remove: list[tuple[str, asyncio.Future[None]]] = []
        self._fencing: asyncio.Task[None] | None = None

    def accepting(self, name: str) -> bool:
        return name in self.loaded and name not in self.closing

    @contextlib.asynccontextmanager
    async def _exclusive(self, name: str) -> AsyncIterator[None]:
        lock, users = self._name_locks.setdefault(name, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._name_locks[name]

    # --- load ---------------------------------------------------------------------------------------------
    async def load(self, name: str, url: str) -> Manifest:
        check_name(name)
        if not Path(url).is_absolute():
            raise BadRequest(f"url must be an absolute path to the extracted model folder, got {url!r}")
        async with self._exclusive(name):
            if name in self.loaded:
                raise Conflict(f"model {name} is already loaded")
            started = time.perf_counter()
            model_dir = check_model_folder(Path(url))
            manifest = (await asyncio.to_thread(load_model_dir, model_dir)).manifest
            cost = self.admission.admit(name, manifest, mapped=weights_mappable(model_dir))
            entry = Entry(
                load_id=self.registry.new_load_id(),
                name=name,
                url=str(model_dir),
                model=manifest.name,
                version=manifest.version,
                cost_bytes=cost,
            )
            try:
                self.registry.write_entry(entry)
                self.registry.accept(name)
            except BaseException:
                self.registry.refuse(name)
                self.registry.remove_entries([name])
                self.admission.release(name)
                raise
            self.loaded[name] = Loaded(entry, time.time())
            logger.info(
                "loaded %s-v%d as %s from %s cost_kib=%d seconds=%.4f",
                manifest.name,
                manifest.version,
                name,
                url,
                cost // 1024,
                time.perf_counter() - started,
            )
            return manifest

    # --- unload -------------------------------------------------------------------------------------------
    async def unload(self, name: str) -> None:
        async with self._exclusive(name):
            loaded = self.loaded.get(name)
            if loaded is None:
                raise ModelNotFound(f"model {name} is not loaded")
            self.closing.add(name)
            self.registry.refuse(name)
            try:
                done = asyncio.get_running_loop().create_future()
                self._to_remove.append((name, done))
                if self._fencing is None or self._fencing.done():
                    self._fencing = asyncio.create_task(self._fence_rounds())
                await asyncio.shield(done)
            finally:
                self.closing.discard(name)
                self.loaded.pop(name, None)
                self.admission.release(name)
            logger.info("unloaded %s-v%d (%s)", loaded.entry.model, loaded.entry.version, name)

    async def _fence_rounds(self) -> None:
        """One fence at a time; the unloads waiting when a round starts share it."""
        while self._to_remove:
            await asyncio.sleep(SETTLE_S)
            batch, self._to_remove = self._to_remove, []
            try:
                await self._fence([name for name, _ in batch])
            except Exception:  # the entries are removed whatever happened: never leave an unload waiting
                logger.exception("fence for %d unloads failed; removed them without it", len(batch))
                self.registry.remove_entries([name for name, _ in batch])
            for _, done in batch:
                if not done.done():
                    done.set_result(None)

    async def _fence(self, names: list[str]) -> None:
        fence = self.registry.new_fence()
        started = time.perf_counter()
        timeout = self.settings.drain_timeout_s
        markers: set[asyncio.Task[bool]] = {asyncio.create_task(self._marker(fence)) for _ in range(self.workers)}
        reached = timeout <= 0
        deadline = time.monotonic() + timeout
        resent = time.monotonic()
        try:
            while not reached and time.monotonic() < deadline:
                # A worker that died holding a marker leaves its replacement without one: send another.
                failed = [m for m in markers if m.done() and not m.result()]
                if failed and time.monotonic() - resent > MARKER_RESEND_S:
                    resent = time.monotonic()
                    for marker in failed:
                        markers.discard(marker)
                        markers.add(asyncio.create_task(self._marker(fence)))
                # Every live worker has reached the fence (none alive: none has anything in flight).
                reached = all(slot.fence >= fence for slot in self.registry.slots())
                if not reached:
                    await asyncio.sleep(FENCE_POLL_S)
            if not reached:
                logger.warning(
                    "requests to %s still unanswered after %.0f s; unloading anyway", ", ".join(names), timeout
                )
            self.registry.remove_entries(names)
        finally:
            self.registry.release_fence(fence)
        _, pending = await asyncio.wait(markers, timeout=RELEASE_WAIT_S)
        for marker in pending:
            marker.cancel()
        logger.debug("fence %d for %d unloads in %.4f s", fence, len(names), time.perf_counter() - started)

    async def _marker(self, fence: int) -> bool:
        """True once a worker answered the marker; False if it could not (a worker died holding it)."""
        try:
            status, _, _ = await self.mms.invoke(
                POOL_MODEL,
                b"{}",
                {DRAIN_HEADER: str(fence), "Content-Type": "application/json"},
                timeout_s=self.settings.drain_timeout_s + RELEASE_WAIT_S + 5,
            )
        except ModelServerError:
            return False
        return status == 200
