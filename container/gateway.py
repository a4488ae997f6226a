"""The public face of the model server: SageMaker's MME calls in front of Multi Model Server.

Why a gateway (the role nginx plays in classic bring-your-own containers):
- MMS leaves a model registered after a failed load (retry -> 409, invoke -> 503),
  which breaks SageMaker's unload-LRU-and-retry loop; we verify and admit *before*
  MMS registers anything and unregister whatever a failed load left behind.
- Memory admission needs the manifest's estimate and the container's real free memory.
- MMS error bodies carry Java exception class names; ours are ``{"error", "message"}``.
Invocations are forwarded byte for byte over a keep-alive pool (when nginx fronts the
server they bypass Python; see :mod:`genesig.container.nginx`).

A name is *unavailable* from the start of its load until the load succeeds, and from the
start of its unload on: its invocations get 404 at once, from nginx (a flag file per name)
or from here, instead of meeting a worker that is starting or stopping inside MMS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import msgspec
import psutil
from aiohttp import web

from genesig.artifact import Manifest, load_model_dir, read_manifest
from genesig.artifact.package import check_model_folder
from genesig.container.memory import MemoryStatus
from genesig.container.settings import DRAIN_HEADER, ServingSettings
from genesig.errors import (
    BadRequest,
    Conflict,
    GenesigError,
    InsufficientMemory,
    ModelNotFound,
    ModelServerError,
    PayloadTooLarge,
)

logger = logging.getLogger(__name__)

MIB = 1024 * 1024
# SageMaker caps invocation payloads at 6 MB; a little slack for headers and CSV framing.
MAX_REQUEST_BYTES = 6 * MIB + 512 * 1024
INVOKE_TIMEOUT_S = 60
UNREGISTER_ATTEMPTS = 8
# Between flagging a name unavailable and sending the drain marker: lets a request that nginx let through just
# before the flag reach MMS's queue ahead of the marker (nginx hands it on within a millisecond; the rest is margin
# for a busy machine). One arriving later still meets an idle worker: answered, or 404 if the unload stops it.
DRAIN_SETTLE_S = 0.02
# A file name: at most 255 bytes, no '/', NUL, '.' or '..'.
MAX_FLAG_NAME_BYTES = 255

MemoryProbe = Callable[[], MemoryStatus]

_MMS_ERROR_CODES = {
    404: "model_not_found",
    409: "conflict",
    413: "payload_too_large",
    503: "model_unavailable",
    507: "insufficient_memory",
}


class LoadRequest(msgspec.Struct, forbid_unknown_fields=False):
    model_name: str
    url: str


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(status=status, body=msgspec.json.encode(body), content_type="application/json")


def _rewrite_mms_error(status: int, payload: bytes) -> bytes:
    """MMS's own errors say ``{"code", "type", "message"}`` with a Java class name; keep only the message."""
    try:
        doc = msgspec.json.decode(payload)
    except msgspec.DecodeError:
        return payload
    if isinstance(doc, dict) and "type" in doc and "message" in doc and "error" not in doc:
        code = _MMS_ERROR_CODES.get(status, "model_server_error")
        return msgspec.json.encode({"error": code, "message": str(doc["message"])})
    return payload


def manifest_summary(manifest: Manifest) -> dict[str, Any]:
    """What a client needs to call the model: genes in order, target, output meaning, version."""
    return {
        "name": manifest.name,
        "version": manifest.version,
        "artifact": manifest.artifact_name,
        "schema_version": manifest.schema_version,
        "signature": manifest.signature.name,
        "genes": manifest.genes,
        "id_column": manifest.id_column,
        "target": manifest.target,
        "output": msgspec.to_builtins(manifest.output),
        "metrics": manifest.metrics,
        "memory_estimate_bytes": manifest.memory_estimate_bytes,
    }


def _backend_processes() -> dict[str, list[int]]:
    """Pids of the live backend processes per model name: MMS starts each with ``--model-name NAME`` (a server
    process and the worker it forks, both with that command line)."""
    found: dict[str, list[int]] = {}
    for process in psutil.Process().children(recursive=True):
        try:
            args = process.cmdline()
            if "--model-name" in args[:-1] and process.status() != psutil.STATUS_ZOMBIE:
                found.setdefault(args[args.index("--model-name") + 1], []).append(process.pid)
        except psutil.Error:
            continue
    return found


def _flag_name_ok(name: str) -> bool:
    return name not in (".", "..") and "\0" not in name and len(name.encode()) <= MAX_FLAG_NAME_BYTES


class Gateway:
    """Owns the connection to MMS and the memory admission; the aiohttp routes are thin methods on it."""

    def __init__(
        self,
        settings: ServingSettings,
        mms_url: str,
        memory_probe: MemoryProbe,
        unavailable_dir: Path | None = None,
    ) -> None:
        self.settings = settings
        self.mms_url = mms_url.rstrip("/")
        self.memory_probe = memory_probe
        # nginx answers 404 to invocations of a name with a file here (see the module docstring).
        self.unavailable_dir = unavailable_dir
        self._unavailable: set[str] = set()
        # Per loaded model: pidfds of its backend processes, readable as soon as one of them exits.
        self._backend_fds: dict[str, list[int]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._reserved_bytes = 0
        # Per model name: one load or unload at a time, and how many requests hold or wait for the lock.
        self._name_locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        self._manifests: dict[str, Manifest] = {}
        self._watchdog: asyncio.Task[None] | None = None

    # --- lifecycle -------------------------------------------------------------------------------------
    async def start(self, _app: web.Application | None = None) -> None:
        if self.unavailable_dir is not None:
            shutil.rmtree(self.unavailable_dir, ignore_errors=True)
            self.unavailable_dir.mkdir(parents=True)
        connector = aiohttp.TCPConnector(limit=256, keepalive_timeout=60)
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        if self.settings.backend_watchdog_s > 0:
            self._watchdog = asyncio.create_task(self._watch_backends(self.settings.backend_watchdog_s))

    async def close(self, _app: web.Application | None = None) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        for name in list(self._backend_fds):
            self._stop_watching(name)
        if self._session is not None:
            await self._session.close()

    # --- availability --------------------------------------------------------------------------------------
    def _mark_unavailable(self, name: str) -> None:
        self._unavailable.add(name)
        if self.unavailable_dir is None:
            return
        if not _flag_name_ok(name):
            logger.warning("model name of %d bytes cannot be flagged for nginx; its unload is not gated", len(name))
            return
        try:
            (self.unavailable_dir / name).touch()
        except OSError as exc:
            logger.warning("could not flag %s unavailable for nginx: %s", name, exc)

    def _mark_available(self, name: str) -> None:
        self._unavailable.discard(name)
        if self.unavailable_dir is not None and _flag_name_ok(name):
            with contextlib.suppress(OSError):
                (self.unavailable_dir / name).unlink(missing_ok=True)

    async def _drain(self, name: str) -> None:
        """Wait until MMS has answered every request it accepted for ``name`` before the name became unavailable.

        Each model has one worker taking requests from its queue in order, so a marker request sent now is
        answered only after everything queued before it. Unloading without this stops the worker under them:
        MMS answers 500 to the request inside the worker and puts the queued ones back on a queue that nothing
        reads any more (they are never answered).
        """
        timeout = self.settings.drain_timeout_s
        if timeout <= 0:
            return
        await asyncio.sleep(DRAIN_SETTLE_S)
        started = time.perf_counter()
        try:
            status, _, _ = await self._mms(
                "POST",
                f"/models/{quote(name, safe='')}/invoke",
                data=b"{}",
                headers={DRAIN_HEADER: "1", "Content-Type": "application/json"},
                timeout=timeout,
            )
        except ModelServerError:
            logger.warning("requests to %s still unanswered after %.0f s; unloading anyway", name, timeout)
            return
        logger.debug("drained %s in %.3f s (status %d)", name, time.perf_counter() - started, status)

    # --- dead backends -----------------------------------------------------------------------------------
    async def _watch(self, name: str) -> None:
        """Watch a freshly loaded model's backend processes through pidfds: the event loop learns of their exit
        at once. Without pidfds (Linux < 5.3) the periodic check in :meth:`_watch_backends` still finds them."""
        if not hasattr(os, "pidfd_open"):
            return
        pids = (await asyncio.to_thread(_backend_processes)).get(name, [])
        loop = asyncio.get_running_loop()
        fds: list[int] = []
        self._backend_fds[name] = fds
        for pid in pids:
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                self._backend_exited(name)
                return
            except OSError as exc:  # not permitted or not supported here: the periodic check covers it
                logger.debug("cannot watch backend %d of %s: %s", pid, name, exc)
                continue
            fds.append(fd)
            loop.add_reader(fd, self._backend_exited, name)

    def _stop_watching(self, name: str) -> None:
        loop = asyncio.get_running_loop()
        for fd in self._backend_fds.pop(name, []):
            loop.remove_reader(fd)
            os.close(fd)

    def _backend_exited(self, name: str) -> None:
        self._stop_watching(name)  # a pidfd stays readable: stop before the loop calls us again
        task = asyncio.create_task(self._unload_dead(name))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _watch_backends(self, interval_s: float) -> None:
        """The fallback check: unload a loaded model whose backend process is gone (killed, OOM-killed) on two
        checks in a row with no load or unload under way. Multi Model Server 1.1.11 keeps reconnecting to a dead
        worker's socket with growing back-off and never starts a new one, so every invoke would hang."""
        suspects: set[str] = set()
        while True:
            await asyncio.sleep(interval_s)
            try:
                alive = await asyncio.to_thread(_backend_processes)
                missing = {n for n in self._manifests if n not in alive and n not in self._name_locks}
                for name in missing & suspects:
                    await self._unload_dead(name)
                suspects = missing
            except Exception:  # the watchdog must outlive any one failure
                logger.exception("backend watchdog check failed")

    async def _unload_dead(self, name: str) -> None:
        """A backend died: flag the name (new invokes 404 at once) and unload it, so the next load starts afresh."""
        async with self._exclusive(name):
            if name not in self._manifests:
                return
            self._stop_watching(name)
            self._mark_unavailable(name)
            status = await self._unregister(f"/models/{quote(name, safe='')}")
            self._manifests.pop(name, None)
        logger.warning(
            "the backend of model %s died; unloaded it (status %d) so that a new load can start", name, status
        )

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "gateway not started"
        return self._session

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_REQUEST_BYTES, middlewares=[self._errors])
        app.on_startup.append(self.start)
        app.on_cleanup.append(self.close)
        app.router.add_get("/ping", self.ping)
        app.router.add_get("/models", self.list_models)
        app.router.add_post("/models", self.load_model)
        app.router.add_get("/models/{name}", self.describe_model)
        app.router.add_delete("/models/{name}", self.unload_model)
        app.router.add_post("/models/{name}/invoke", self.invoke)
        return app

    @web.middleware
    async def _errors(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except GenesigError as exc:
            if exc.status >= 500:
                logger.warning("%s %s -> %d %s", request.method, request.path, exc.status, exc.message)
            return _json(exc.status, exc.to_body())
        except web.HTTPRequestEntityTooLarge:
            err = PayloadTooLarge(f"request body is over the {MAX_REQUEST_BYTES}-byte limit")
            return _json(err.status, err.to_body())
        except web.HTTPException as exc:
            return _json(exc.status, {"error": exc.reason.lower().replace(" ", "_"), "message": exc.reason})
        except Exception:
            logger.exception("%s %s failed", request.method, request.path)
            return _json(500, {"error": "internal_error", "message": "the request failed; see the server log"})

    # --- talking to MMS --------------------------------------------------------------------------------
    async def _mms(self, method: str, path: str, *, timeout: float, **kwargs: Any) -> tuple[int, bytes, str]:
        try:
            async with self.session.request(
                method, self.mms_url + path, timeout=aiohttp.ClientTimeout(total=timeout), **kwargs
            ) as resp:
                return resp.status, await resp.read(), resp.headers.get("Content-Type", "application/json")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ModelServerError(f"model server did not answer {method} {path}: {type(exc).__name__}") from None

    def _relay(self, status: int, payload: bytes, content_type: str) -> web.Response:
        if status != 200:
            payload, content_type = _rewrite_mms_error(status, payload), "application/json"
        return web.Response(status=status, body=payload, headers={"Content-Type": content_type})

    # --- routes ----------------------------------------------------------------------------------------
    async def ping(self, _request: web.Request) -> web.Response:
        try:
            status, _, _ = await self._mms("GET", "/ping", timeout=5)
        except ModelServerError:
            status = 503
        if status == 200:
            return _json(200, {"status": "Healthy"})
        return _json(503, {"status": "Unhealthy"})

    async def list_models(self, request: web.Request) -> web.Response:
        params = {k: v for k, v in request.query.items() if k in ("limit", "next_page_token")}
        if "limit" in params and not (params["limit"].isdigit() and int(params["limit"]) > 0):
            raise BadRequest(f"limit must be a positive integer, got {params['limit']!r}")
        return self._relay(*await self._mms("GET", "/models", params=params, timeout=30))

    async def describe_model(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        status, payload, content_type = await self._mms("GET", f"/models/{quote(name, safe='')}", timeout=30)
        if status != 200:
            return self._relay(status, payload, content_type)
        doc = msgspec.json.decode(payload)
        described = doc[0] if isinstance(doc, list) and doc else doc
        manifest = self._manifests.get(name)
        if manifest is None and isinstance(described, dict) and described.get("modelUrl"):
            manifest = await asyncio.to_thread(read_manifest, Path(described["modelUrl"]))
            self._manifests[name] = manifest
        if isinstance(described, dict) and manifest is not None:
            described["genesig"] = manifest_summary(manifest)
        return _json(200, described)

    @contextlib.asynccontextmanager
    async def _exclusive(self, name: str) -> AsyncIterator[None]:
        """Serialise loads and unloads of one model name. An unload that reaches MMS while that model's worker is
        still starting unregisters it under the load: the load never answers and the worker is orphaned."""
        lock, users = self._name_locks.setdefault(name, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._name_locks[name]

    async def unload_model(self, request: web.Request) -> web.Response:
        """Unload gracefully: new invokes get 404 at once, those already accepted are answered, then MMS unloads."""
        name = request.match_info["name"]
        path = f"/models/{quote(name, safe='')}"
        async with self._exclusive(name):
            self._mark_unavailable(name)
            self._stop_watching(name)
            await self._drain(name)
            try:
                result = await self._mms("DELETE", path, timeout=self.settings.load_timeout_s)
            except ModelServerError:
                await self._serve_again_if_loaded(name, path)
                raise
            if result[0] not in (200, 404):
                await self._serve_again_if_loaded(name, path)
        if result[0] == 200:
            self._manifests.pop(name, None)
            logger.info("unloaded %s", name)
        return self._relay(*result)

    async def _serve_again_if_loaded(self, name: str, path: str) -> None:
        """An unload failed: if MMS still has the model, lift the flag and watch its backend again."""
        with contextlib.suppress(ModelServerError):
            if (await self._mms("GET", path, timeout=30))[0] == 200:
                self._mark_available(name)
                await self._watch(name)

    async def invoke(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name in self._unavailable:
            raise ModelNotFound(f"model {name} is not loaded")
        body = await request.read()
        headers = {k: request.headers[k] for k in ("Content-Type", "Accept") if k in request.headers}
        skip = () if "Content-Type" in headers else ("Content-Type",)
        result = await self._mms(
            "POST",
            f"/models/{quote(name, safe='')}/invoke",
            data=body,
            headers=headers,
            skip_auto_headers=skip,
            timeout=INVOKE_TIMEOUT_S,
        )
        if result[0] in (500, 503) and name in self._unavailable:  # its worker stopped under it: unloaded
            raise ModelNotFound(f"model {name} is not loaded")
        return self._relay(*result)

    async def load_model(self, request: web.Request) -> web.Response:
        try:
            spec = msgspec.json.decode(await request.read(), type=LoadRequest)
        except msgspec.DecodeError as exc:
            raise BadRequest(f'load body must be JSON {{"model_name": str, "url": str}}: {exc}') from None
        if not spec.model_name or "/" in spec.model_name or spec.model_name in (".", ".."):
            raise BadRequest("model_name must be a non-empty name without '/', and not '.' or '..'")
        if not Path(spec.url).is_absolute():
            # MMS resolves relative URLs against its model store, not our working folder: refuse the ambiguity.
            raise BadRequest(f"url must be an absolute path to the extracted model folder, got {spec.url!r}")
        async with self._exclusive(spec.model_name):
            return await self._load_locked(spec)

    async def _load_locked(self, spec: LoadRequest) -> web.Response:
        name = spec.model_name
        path = f"/models/{quote(name, safe='')}"
        status, _, _ = await self._mms("GET", path, timeout=30)
        if status == 200:
            self._mark_available(name)  # MMS has it (e.g. a load whose answer timed out): serve it
            raise Conflict(f"model {name} is already loaded")
        started = time.perf_counter()
        model_dir = check_model_folder(Path(spec.url))
        # Full verification (schema, checksums, shapes) before MMS registers anything.
        manifest = (await asyncio.to_thread(load_model_dir, model_dir)).manifest
        need = manifest.memory_estimate_bytes
        self._admit(manifest, need)
        self._reserved_bytes += need
        self._mark_unavailable(name)  # until MMS has a worker for it, invokes get 404, not MMS's 503
        try:
            status, payload, _ = await self._mms(
                "POST", "/models", json={"model_name": name, "url": spec.url}, timeout=self.settings.load_timeout_s
            )
        finally:
            self._reserved_bytes -= need
        if status == 200:
            self._manifests[name] = manifest
            self._mark_available(name)
            await self._watch(name)
            logger.info(
                "loaded %s as %s version=%d seconds=%.3f",
                manifest.name,
                name,
                manifest.version,
                time.perf_counter() - started,
            )
            return _json(200, {"status": f"model {name} loaded", "model": manifest_summary(manifest)})
        if status == 409:
            self._mark_available(name)
            raise Conflict(f"model {name} is already loaded")
        # MMS keeps a model registered after a failed load; remove it so the caller's retry can succeed.
        cleanup = await self._unregister(path)
        logger.warning("load of %s failed with %d; unregistered (status %d)", name, status, cleanup)
        message = _rewrite_mms_error(status, payload).decode(errors="replace")
        if status == 507:
            raise InsufficientMemory(f"model server ran out of memory loading {manifest.name}")
        raise ModelServerError(f"model server failed to load {manifest.name} ({status}): {message}")

    async def _unregister(self, path: str) -> int:
        """DELETE a model (after a failed load, or whose backend died) until GET agrees it is gone.

        Right after a backend fails its load, MMS can answer DELETE with 404 while it is still tearing the
        worker down, and then list the model again with no worker behind it: every invoke gets 503 and a new
        load gets 409. Seen under concurrent loads at a full memory budget.
        """
        status = 0
        for attempt in range(UNREGISTER_ATTEMPTS):
            status, _, _ = await self._mms("DELETE", path, timeout=self.settings.load_timeout_s)
            gone, _, _ = await self._mms("GET", path, timeout=30)
            if gone == 404:
                return status
            await asyncio.sleep(0.1 * (attempt + 1))
        logger.error("model %s is still registered after %d unloads", path, UNREGISTER_ATTEMPTS)
        return status

    def _admit(self, manifest: Manifest, need: int) -> None:
        memory = self.memory_probe()
        reserve = self.settings.memory_reserve_mb * MIB
        free = memory.available_bytes - reserve - self._reserved_bytes
        if need > free:
            logger.info(
                "refused %s: needs %d MiB, %d MiB free above the %d MiB reserve (%s)",
                manifest.name,
                need // MIB,
                max(free, 0) // MIB,
                reserve // MIB,
                memory.source,
            )
            raise InsufficientMemory(
                f"loading {manifest.name} needs about {need // MIB} MiB; {max(free, 0) // MIB} MiB are free "
                f"above the {reserve // MIB} MiB reserve. Unload models and retry.",
                detail={"needed_bytes": need, "free_bytes": max(free, 0), "source": memory.source},
            )
