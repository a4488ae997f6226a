"""Which TargetModels the model server has loaded, and loading one: under its opaque name (as SageMaker does),
through the MME container API; on a 507 the least recently used model no request is using is unloaded and the load
retried, as SageMaker's LRU does."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict

from genesig.aio_client import AsyncModelServerClient
from genesig.errors import ModelServerError
from genesig.local_endpoint.cache import ArtifactCache
from genesig.local_endpoint.errors import EndpointError, error_message, opaque_name, unreachable
from genesig.local_endpoint.stats import EndpointStats

logger = logging.getLogger("genesig.local_endpoint")
MAX_LOAD_ATTEMPTS = 12
# A load refused for memory with no other model to unload is retried this many times (the server's memory may be
# held a moment by requests in flight), then refused to the caller.
ALONE_ATTEMPTS = 3


class ModelLoader:
    """The loaded models (least recently used first), the loads and unloads under way, and the requests in flight
    per model (a model is never unloaded while one is being answered)."""

    def __init__(
        self, client: AsyncModelServerClient, cache: ArtifactCache, stats: EndpointStats, model_url_root: str
    ) -> None:
        self.client = client
        self.cache = cache
        self.stats = stats
        # Where the model server sees the cache: the same path, or the container's /opt/ml/models mount of it.
        self.model_url_root = model_url_root.rstrip("/")
        self.loaded: OrderedDict[str, str] = OrderedDict()  # target -> opaque name, least recently used first
        self.loading: set[str] = set()  # targets whose load is under way (their files must stay)
        self.unloading: dict[str, asyncio.Event] = {}  # targets being unloaded, set when the unload is answered
        self.in_flight: Counter[str] = Counter()  # requests being answered per target (never evicted meanwhile)
        self._locks: dict[str, asyncio.Lock] = {}

    def pinned(self, target: str) -> bool:
        """Its files must stay on disk: loaded, or being loaded."""
        return target in self.loaded or target in self.loading

    async def ensure_loaded(self, target: str) -> tuple[str, bool]:
        """The model's opaque name, and whether this request found it loaded (False: it waited for a load)."""
        if target in self.loaded:
            self.loaded.move_to_end(target)
            self.stats.cache_hits += 1
            return self.loaded[target], True
        lock = self._locks.setdefault(target, asyncio.Lock())
        async with lock:
            if target in self.loaded:  # loaded by the request this one waited behind
                self.stats.cache_hits += 1
                return self.loaded[target], False
            self.stats.cache_misses += 1
            self.loading.add(target)
            try:
                return await self._load(target), False
            finally:
                self.loading.discard(target)

    def forget(self, target: str) -> None:
        """The model server no longer has it (unloaded behind our back): the next request loads it again."""
        self.loaded.pop(target, None)

    async def _register(self, opaque: str, url: str) -> tuple[int, bytes]:
        try:
            status, body, _ = await self.client.load(opaque, url)
        except ModelServerError as exc:
            raise unreachable(exc) from None
        return status, body

    async def _unload(self, opaque: str) -> int:
        try:
            status, _, _ = await self.client.unload(opaque)
        except ModelServerError as exc:
            raise unreachable(exc) from None
        return status

    async def _evict_lru(self, keep: str) -> bool:
        """Unload the least recently used model that no request is using. The victim is claimed before the first
        await, so concurrent loads that all got 507 each evict a different model."""
        victim = next((t for t in self.loaded if t != keep and not self.in_flight[t]), None)
        if victim is None:
            return False
        opaque = self.loaded.pop(victim)
        self.stats.of(victim).evictions += 1
        done = self.unloading[victim] = asyncio.Event()
        try:
            status = await self._unload(opaque)
        finally:
            del self.unloading[victim]
            done.set()
        logger.info("evicted %s (unload answered %d)", victim, status)
        # Its files are no longer in use: over the cache's size limit they go now, not at the next extraction
        # (a load that evicts several models would otherwise leave them all on disk).
        self.cache.trim(keep=keep)
        return True

    async def _load(self, target: str) -> str:
        started = time.perf_counter()
        if pending := self.unloading.get(target):
            await pending.wait()  # registering again while its unload is under way would find the old one (409)
        model_dir = await self.cache.extract(target)
        opaque = opaque_name(target)
        url = f"{self.model_url_root}/{model_dir.relative_to(self.cache.folder)}"
        alone = 0
        for attempt in range(MAX_LOAD_ATTEMPTS):
            status, body = await self._register(opaque, url)
            if status == 200:
                break
            if status == 409:
                # Registered, yet not loaded by us: a leftover (an endpoint restarted in front of a running server,
                # or a registration a failed load left behind). Unload it and load ours.
                cleanup = await self._unload(opaque)
                logger.warning("%s was registered without us (unload answered %d); loading it again", target, cleanup)
                continue
            if status == 507:
                if not await self._evict_lru(target):
                    others = (set(self.loaded) | self.loading | set(self.unloading)) - {target}
                    alone = 0 if others else alone + 1
                    if alone > ALONE_ATTEMPTS:
                        # Nothing else loaded, loading or unloading, several times over: it does not fit at all.
                        raise EndpointError(
                            507, "ServiceUnavailable", f"not enough memory to load {target}, even with nothing loaded"
                        )
                    # Other requests' models are in use or being unloaded: give them a moment.
                    await asyncio.sleep(0.25 * (attempt + 1))
                continue
            if status in (400, 404, 422):
                self.cache.forget(target)
            message = error_message(body)
            if status == 422:  # the gateway's verification: schema, checksums, tensor shapes and format
                raise EndpointError(
                    400, "ValidationError", f"TargetModel {target} is not a valid model artifact: {message}"
                )
            raise EndpointError(
                status if status < 500 else 502,
                "ValidationError" if status < 500 else "InternalFailure",
                f"loading {target} failed ({status}): {message}",
            )
        else:
            raise EndpointError(
                507, "ServiceUnavailable", f"not enough memory to load {target}, even after unloading other models"
            )
        self.loaded[target] = opaque
        stats = self.stats.of(target)
        stats.loads += 1
        stats.load_ms.append((time.perf_counter() - started) * 1000)
        logger.info("loaded %s as %s in %.0f ms", target, opaque, stats.load_ms[-1])
        return opaque
