"""A local multi-model endpoint that routes like SageMaker's MME, in front of the real model server.

It speaks SageMaker Runtime's REST shape (``POST /endpoints/{name}/invocations`` with the
``X-Amzn-SageMaker-Target-Model`` header), so boto3's ``invoke_endpoint`` and ``genesig predict``
work against it unchanged. On the first request for a TargetModel it fetches the artifact from
the prefix (a folder or S3), extracts it safely into a cache folder, loads it into the model
server under an opaque name (as SageMaker does) and invokes; on a 507 it unloads the least
recently used model and retries. Model-server errors reach the caller as SageMaker's
``ModelError`` (HTTP 424 with the original status and body).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
from aiohttp import web

from genesig.artifact import extract_artifact
from genesig.artifact.package import NO_SPACE
from genesig.container.settings import SAGEMAKER_MAX_PAYLOAD_BYTES
from genesig.errors import ArtifactError, DataError, GenesigError, InsufficientStorage

logger = logging.getLogger(__name__)
MAX_LOAD_ATTEMPTS = 12
# A load refused for memory with no other model to unload is retried this many times (the server's memory may be
# held a moment by requests in flight), then refused to the caller.
ALONE_ATTEMPTS = 3
INVOKE_ATTEMPTS = 5
# Timings kept per model for the medians: the most recent ones, so a long-running endpoint stays bounded.
TIMING_WINDOW = 1024
# Response header: "miss" when this request waited for its model to be loaded (a cold start), else "hit".
CACHE_HEADER = "X-Genesig-Model-Cache"
LOG_MODELS_AT_CLOSE = 20


class EndpointError(GenesigError):
    """An error answered the way SageMaker Runtime answers it (botocore maps ``type`` to its exception)."""

    def __init__(self, status: int, error_type: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.extra = extra

    def response(self) -> web.Response:
        body = {"Message": self.message, "message": self.message, **self.extra}
        return web.Response(
            status=self.status,
            body=msgspec.json.encode(body),
            content_type="application/json",
            headers={"x-amzn-ErrorType": self.error_type} if self.error_type else None,
        )


@dataclass
class ModelStats:
    invocations: int = 0
    loads: int = 0
    evictions: int = 0
    load_ms: deque[float] = field(default_factory=lambda: deque(maxlen=TIMING_WINDOW))
    invoke_ms: deque[float] = field(default_factory=lambda: deque(maxlen=TIMING_WINDOW))


class ModelSource:
    """Where artifacts live: a local folder (the run-local prefix) or ``s3://bucket/prefix/``."""

    def __init__(self, prefix: str, s3_client: Any = None) -> None:
        self.prefix = prefix
        self.s3 = s3_client
        if prefix.startswith("s3://") and s3_client is None:
            from genesig.pipeline.sagemaker.aws import client

            self.s3 = client("s3")
        elif not prefix.startswith("s3://") and not Path(prefix).is_dir():
            raise DataError(f"--prefix {prefix}: no such folder (the model prefix: a folder of .tar.gz, or s3://...)")

    def fetch(self, target: str, into: Path) -> Path:
        """Copy the artifact to ``into``; raise ``FileNotFoundError`` when the prefix has no such object."""
        if self.prefix.startswith("s3://"):
            from genesig.pipeline.sagemaker.aws import AwsNotFound, read_object, s3_join

            try:
                into.write_bytes(read_object(self.s3, s3_join(self.prefix, target)))
            except AwsNotFound:
                raise FileNotFoundError(target) from None
            return into
        source = Path(self.prefix) / target
        if not source.is_file():
            raise FileNotFoundError(target)
        shutil.copyfile(source, into)
        return into


def _error_message(body: bytes) -> str:
    """The model server's JSON error message, or its body as text."""
    try:
        return str(msgspec.json.decode(body)["message"])
    except (msgspec.DecodeError, KeyError, TypeError):
        return body.decode(errors="replace")


def opaque_name(target: str) -> str:
    # SageMaker hands the container a hash, not the TargetModel string.
    return hashlib.sha256(target.encode()).hexdigest()[:32]


def check_target(target: str | None) -> str:
    if not target:
        raise EndpointError(400, "ValidationError", "this endpoint is a multi-model endpoint: set TargetModel")
    target = target.lstrip("/")  # the AWS sample sends "/model-<group>.tar.gz"
    parts = Path(target).parts
    if not target or ".." in parts or target.startswith("/") or len(target) > 1024:
        raise EndpointError(400, "ValidationError", f"invalid TargetModel {target!r}")
    return target


class LocalEndpoint:
    """Routing state: extracted artifacts on disk (LRU by size) and loaded models (LRU by use)."""

    def __init__(
        self,
        source: ModelSource,
        model_server_url: str,
        cache_dir: Path,
        cache_max_bytes: int,
        model_url_root: str | None = None,
    ) -> None:
        self.source = source
        self.model_server_url = model_server_url.rstrip("/")
        self.cache_dir = cache_dir.resolve()
        # Where the model server sees the cache: the same path, or the container's /opt/ml/models mount of it.
        self.model_url_root = (model_url_root or str(self.cache_dir)).rstrip("/")
        self.cache_max_bytes = cache_max_bytes
        self.loaded: OrderedDict[str, str] = OrderedDict()  # target -> opaque name, least recently used first
        self.on_disk: OrderedDict[str, int] = OrderedDict()  # target -> extracted bytes, least recently used first
        self.disk_bytes = 0  # sum of on_disk, kept as it changes (thousands of models: never re-summed)
        self.stats: dict[str, ModelStats] = {}
        self.cache_hits = 0
        self.cache_misses = 0
        self._locks: dict[str, asyncio.Lock] = {}
        self.loading: set[str] = set()  # targets whose load is under way (their files must stay)
        self.unloading: dict[str, asyncio.Event] = {}  # targets being unloaded, set when the unload is answered
        self.in_flight: Counter[str] = Counter()  # requests being answered per target (never evicted meanwhile)
        self._session: aiohttp.ClientSession | None = None

    async def start(self, _app: web.Application | None = None) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.cache_dir.chmod(0o755)  # a model server running as another user (a container's) reads it
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))

    async def close(self, _app: web.Application | None = None) -> None:
        summary = self.metrics()
        logger.info(
            "endpoint totals: loaded=%d cache_hits=%d cache_misses=%d loads=%d evictions=%d",
            summary["LoadedModelCount"],
            summary["ModelCacheHit"],
            summary["ModelCacheMiss"],
            summary["ModelLoads"],
            summary["ModelEvictions"],
        )
        busiest = sorted(summary["models"].items(), key=lambda item: -item[1]["invocations"])
        for target, stats in busiest[:LOG_MODELS_AT_CLOSE]:
            logger.info(
                "model %s: invocations=%d loads=%d evictions=%d load_ms_median=%s invoke_ms_median=%s",
                target,
                stats["invocations"],
                stats["loads"],
                stats["evictions"],
                stats["load_ms_median"],
                stats["invoke_ms_median"],
            )
        if len(busiest) > LOG_MODELS_AT_CLOSE:
            logger.info(
                "... and %d less used models (all at GET /metrics while running)", len(busiest) - LOG_MODELS_AT_CLOSE
            )
        if self._session is not None:
            await self._session.close()

    async def _request(self, method: str, path: str, **kwargs: Any) -> tuple[int, bytes, str]:
        assert self._session is not None
        try:
            async with self._session.request(
                method, self.model_server_url + path, timeout=aiohttp.ClientTimeout(total=120), **kwargs
            ) as resp:
                return resp.status, await resp.read(), resp.headers.get("Content-Type", "application/json")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise EndpointError(503, "ServiceUnavailable", f"model server unreachable: {type(exc).__name__}") from None

    # --- cache on disk ---------------------------------------------------------------------------------
    def _model_dir(self, target: str) -> Path:
        return self.cache_dir / opaque_name(target) / "model"

    async def _extract(self, target: str) -> Path:
        """The target's extracted folder, fetched and extracted (in a thread) unless cached; bookkeeping stays on
        the event loop, so concurrent loads never race on it."""
        model_dir = self._model_dir(target)
        if target in self.on_disk and model_dir.is_dir():
            self.on_disk.move_to_end(target)
            return model_dir
        try:
            size = await asyncio.to_thread(self._fetch_and_extract, target, model_dir)
        except InsufficientStorage:
            # The cache's disk is full: drop every extracted model that is not loaded, then try once more.
            freed = self._trim_disk(keep=target, limit=0)
            logger.warning("cache disk full while extracting %s; deleted %d unloaded models, retrying", target, freed)
            try:
                size = await asyncio.to_thread(self._fetch_and_extract, target, model_dir)
            except InsufficientStorage as exc:
                raise EndpointError(
                    507,
                    "ServiceUnavailable",
                    f"no disk space for TargetModel {target} in the model cache: {exc.message}",
                ) from None
        self.disk_bytes += size - self.on_disk.pop(target, 0)
        self.on_disk[target] = size
        self._trim_disk(keep=target)
        return model_dir

    def _fetch_and_extract(self, target: str, model_dir: Path) -> int:
        """Blocking part of a cache miss; touches no shared state. Returns the extracted bytes."""
        if model_dir.is_dir():
            shutil.rmtree(model_dir.parent)  # left by an earlier process: extract again rather than trust it
        with tempfile.TemporaryDirectory(dir=self.cache_dir) as tmp:
            try:
                archive = self.source.fetch(target, Path(tmp) / "artifact.tar.gz")
            except OSError as exc:
                if exc.errno in NO_SPACE:
                    raise InsufficientStorage(f"no space left to download {target}: {exc.strerror}") from None
                if isinstance(exc, FileNotFoundError):
                    raise EndpointError(
                        404, "ValidationError", f"TargetModel {target} is not in the model prefix {self.source.prefix}"
                    ) from None
                raise
            try:
                extract_artifact(archive, model_dir)
            except (InsufficientStorage, ArtifactError) as exc:
                shutil.rmtree(model_dir.parent, ignore_errors=True)
                if isinstance(exc, InsufficientStorage):
                    raise
                raise EndpointError(
                    400, "ValidationError", f"TargetModel {target} is not a valid model artifact: {exc.message}"
                ) from None
        return sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file())

    def _trim_disk(self, keep: str, limit: int | None = None) -> int:
        """Delete the least recently used extracted artifacts that are not loaded (nor about to be), down to
        ``limit`` bytes (default: the cache's size limit). Returns how many were deleted."""
        limit = self.cache_max_bytes if limit is None else limit
        deleted = 0
        for target in list(self.on_disk):
            if self.disk_bytes <= limit:
                break
            if target in self.loaded or target in self.loading or target == keep:
                continue
            shutil.rmtree(self._model_dir(target).parent, ignore_errors=True)
            self.disk_bytes -= self.on_disk.pop(target)
            deleted += 1
            logger.info("cache: deleted %s from disk", target)
        return deleted

    # --- loading ------------------------------------------------------------------------------------------
    async def _evict_lru(self, keep: str) -> bool:
        """Unload the least recently used model that no request is using. The victim is claimed before the first
        await, so concurrent loads that all got 507 each evict a different model."""
        victim = next((t for t in self.loaded if t != keep and not self.in_flight[t]), None)
        if victim is None:
            return False
        opaque = self.loaded.pop(victim)
        self.stats.setdefault(victim, ModelStats()).evictions += 1
        done = self.unloading[victim] = asyncio.Event()
        try:
            status, _, _ = await self._request("DELETE", f"/models/{opaque}")
        finally:
            del self.unloading[victim]
            done.set()
        logger.info("evicted %s (unload answered %d)", victim, status)
        # Its files are no longer in use: over the cache's size limit they go now, not at the next extraction
        # (a load that evicts several models would otherwise leave them all on disk).
        self._trim_disk(keep=keep)
        return True

    async def _ensure_loaded(self, target: str) -> tuple[str, bool]:
        """The model's opaque name, and whether this request found it loaded (False: it waited for a load)."""
        if target in self.loaded:
            self.loaded.move_to_end(target)
            self.cache_hits += 1
            return self.loaded[target], True
        lock = self._locks.setdefault(target, asyncio.Lock())
        async with lock:
            if target in self.loaded:  # loaded by the request this one waited behind
                self.cache_hits += 1
                return self.loaded[target], False
            self.cache_misses += 1
            self.loading.add(target)
            try:
                return await self._load(target), False
            finally:
                self.loading.discard(target)

    async def _load(self, target: str) -> str:
        started = time.perf_counter()
        if pending := self.unloading.get(target):
            await pending.wait()  # registering again while its unload is under way would find the old one (409)
        model_dir = await self._extract(target)
        opaque = opaque_name(target)
        alone = 0
        for attempt in range(MAX_LOAD_ATTEMPTS):
            url = f"{self.model_url_root}/{model_dir.relative_to(self.cache_dir)}"
            status, body, _ = await self._request("POST", "/models", json={"model_name": opaque, "url": url})
            if status == 200:
                break
            if status == 409:
                # Registered, yet not loaded by us: a leftover (an endpoint restarted in front of a running server,
                # or a registration a failed load left behind). Unload it and load ours.
                cleanup, _, _ = await self._request("DELETE", f"/models/{opaque}")
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
                shutil.rmtree(model_dir.parent, ignore_errors=True)
                self.disk_bytes -= self.on_disk.pop(target, 0)
            message = _error_message(body)
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
        stats = self.stats.setdefault(target, ModelStats())
        stats.loads += 1
        stats.load_ms.append((time.perf_counter() - started) * 1000)
        logger.info("loaded %s as %s in %.0f ms", target, opaque, stats.load_ms[-1])
        return opaque

    async def invoke(self, target: str, body: bytes, content_type: str | None, accept: str | None) -> web.Response:
        headers = {k: v for k, v in (("Content-Type", content_type), ("Accept", accept)) if v}
        warm = True
        for attempt in range(INVOKE_ATTEMPTS):
            opaque, found = await self._ensure_loaded(target)
            warm = warm and found
            started = time.perf_counter()
            self.in_flight[target] += 1
            try:
                status, payload, response_type = await self._request(
                    "POST",
                    f"/models/{opaque}/invoke",
                    data=body,
                    headers=headers,
                    skip_auto_headers=() if content_type else ("Content-Type",),
                )
            finally:
                self.in_flight[target] -= 1
                if not self.in_flight[target]:
                    del self.in_flight[target]
            last = attempt == INVOKE_ATTEMPTS - 1
            if status == 404 and not last:  # unloaded behind our back (another client): load again
                self.loaded.pop(target, None)
                continue
            if status == 503 and not last:  # the model's worker is starting or busy: retry shortly
                await asyncio.sleep(0.2 * 2**attempt)
                continue
            stats = self.stats.setdefault(target, ModelStats())
            stats.invocations += 1
            stats.invoke_ms.append((time.perf_counter() - started) * 1000)
            if status == 200:
                return web.Response(
                    status=200,
                    body=payload,
                    headers={"Content-Type": response_type, CACHE_HEADER: "hit" if warm else "miss"},
                )
            original = payload.decode(errors="replace")
            raise EndpointError(
                424,
                "ModelError",
                f'Received client error ({status}) from primary with message "{original}"',
                OriginalStatusCode=status,
                OriginalMessage=original,
            )
        raise AssertionError("unreachable")

    def metrics(self) -> dict[str, Any]:
        def median(values: Collection[float]) -> float | None:
            return sorted(values)[len(values) // 2] if values else None

        load_times = [ms for s in self.stats.values() for ms in s.load_ms]
        return {
            "LoadedModelCount": len(self.loaded),
            "ModelCacheHit": self.cache_hits,
            "ModelCacheMiss": self.cache_misses,
            "ModelLoadingTimeMedianMs": median(load_times),
            "CacheDiskBytes": self.disk_bytes,
            "ModelLoads": sum(s.loads for s in self.stats.values()),
            "ModelEvictions": sum(s.evictions for s in self.stats.values()),
            "models": {
                t: {
                    "invocations": s.invocations,
                    "loads": s.loads,
                    "evictions": s.evictions,
                    "load_ms_median": median(s.load_ms),
                    "invoke_ms_median": median(s.invoke_ms),
                    "loaded": t in self.loaded,
                }
                for t, s in self.stats.items()
            },
        }

    # --- HTTP ---------------------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=SAGEMAKER_MAX_PAYLOAD_BYTES)
        app.on_startup.append(self.start)
        app.on_cleanup.append(self.close)
        app.router.add_post("/endpoints/{endpoint}/invocations", self._invocations)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/ping", self._ping)
        return app

    async def _invocations(self, request: web.Request) -> web.Response:
        try:
            target = check_target(request.headers.get("X-Amzn-SageMaker-Target-Model"))
            if (request.content_length or 0) > SAGEMAKER_MAX_PAYLOAD_BYTES:
                raise web.HTTPRequestEntityTooLarge(
                    max_size=SAGEMAKER_MAX_PAYLOAD_BYTES, actual_size=request.content_length or 0
                )
            body = await request.read()
            return await self.invoke(target, body, request.headers.get("Content-Type"), request.headers.get("Accept"))
        except web.HTTPRequestEntityTooLarge:
            # As SageMaker answers it: a bare 413 (botocore's error code "413"), nothing sent to the container.
            return EndpointError(
                413,
                "",
                f"HTTP content length exceeded {SAGEMAKER_MAX_PAYLOAD_BYTES} bytes; send fewer rows per request",
            ).response()
        except EndpointError as exc:
            return exc.response()
        except Exception:
            logger.exception("invocation failed")
            return EndpointError(500, "InternalFailure", "the local endpoint failed; see its log").response()

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.json_response(self.metrics())

    async def _ping(self, _request: web.Request) -> web.Response:
        status, _, _ = await self._request("GET", "/ping")
        return web.json_response(
            {"status": "Healthy" if status == 200 else "Unhealthy"}, status=200 if status == 200 else 503
        )


def runtime_client(url: str) -> Any:
    """A boto3 SageMaker Runtime client aimed at a local endpoint (dummy credentials, no retries)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "sagemaker-runtime",
        region_name="us-east-1",
        endpoint_url=url,
        aws_access_key_id="local",
        aws_secret_access_key="local",
        config=Config(retries={"max_attempts": 1}),
    )


def start_local_endpoint(
    prefix: Path,
    model_server_url: str | None,
    workdir: Path,
    cache_max_mb: int = 2048,
    timeout_s: float = 60,
    cache_dir: Path | None = None,
    model_url_root: str | None = None,
    image: str | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """``genesig local-endpoint`` as a child process on a free loopback port, in front of ``model_server_url`` or
    of the serving ``image`` it starts under Docker; returns the process and its URL once healthy."""
    from genesig.client import ModelServerClient
    from genesig.server_process import free_port

    port = free_port()
    log_path = workdir / f"local-endpoint-{port}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "genesig.cli",
                "local-endpoint",
                "--prefix",
                str(prefix),
                "--port",
                str(port),
                *(["--model-server-url", model_server_url] if model_server_url else []),
                *(["--image", image] if image else []),
                "--cache-dir",
                str(cache_dir or workdir / f"cache-{port}"),
                "--cache-max-mb",
                str(cache_max_mb),
                *(["--model-url-root", model_url_root] if model_url_root else []),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    with ModelServerClient(url, timeout=5) as client:
        deadline = time.monotonic() + timeout_s
        while not client.ping():
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise GenesigError(f"the local endpoint did not start; see {log_path}")
            time.sleep(0.2)
    return proc, url
