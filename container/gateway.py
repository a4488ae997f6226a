"""The public face of the model server: SageMaker's MME calls (load, unload, list, describe, invoke, ping) in front
of Multi Model Server's worker pool.

The routes are thin: loads and unloads are :mod:`genesig.container.lifecycle`'s protocol, admission is
:mod:`genesig.container.admission`'s rule, the pool's health is :mod:`genesig.container.supervision`'s. Invocations
are forwarded byte for byte to the pool with the signature named in a header; when nginx fronts the server they
bypass Python altogether (see :mod:`genesig.container.nginx`). Every error body is :func:`genesig.errors.render_error`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import msgspec
from aiohttp import web

from genesig.aio_client import AsyncModelServerClient
from genesig.artifact import Manifest, read_manifest
from genesig.container.admission import Admission, MemoryProbe
from genesig.container.lifecycle import Lifecycle
from genesig.container.pool import MODEL_HEADER, POOL_MODEL, PoolPaths, PoolRegistry
from genesig.container.settings import MIB, ServingSettings
from genesig.container.supervision import PoolSupervisor
from genesig.errors import (
    BadRequest,
    GenesigError,
    ModelNotFound,
    PayloadTooLarge,
    render_error,
)

logger = logging.getLogger(__name__)

LIST_LIMIT_DEFAULT = 100
LIST_LIMIT_MAX = 1000
# Multi Model Server's own errors name Java classes; the statuses it produces on an invocation, in our words.
POOL_ERRORS = {
    500: ("internal_error", "prediction failed for model {name}; retry, and see the server log if it persists"),
    503: ("model_unavailable", "the worker pool is busy or restarting; retry"),
    507: ("insufficient_memory", "out of memory while predicting; send fewer rows"),
}


class LoadRequest(msgspec.Struct, forbid_unknown_fields=False):
    model_name: str
    url: str


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


def _json(status: int, body: Any) -> web.Response:
    return web.Response(status=status, body=msgspec.json.encode(body), content_type="application/json")


def _error(error: GenesigError) -> web.Response:
    return web.Response(status=error.status, body=error.render(), content_type="application/json")


class Gateway:
    """Owns the pool's registry, admission, lifecycle and supervision; the aiohttp routes are thin methods."""

    def __init__(self, settings: ServingSettings, mms_url: str, memory_probe: MemoryProbe, workers: int) -> None:
        self.settings = settings
        self.workers = workers
        self.paths = PoolPaths.under(settings.state_dir)
        self.registry = PoolRegistry(self.paths)
        self.mms = AsyncModelServerClient(mms_url, connections=256, timeout_s=settings.load_timeout_s)
        self.admission = Admission(memory_probe, self.registry, workers, settings.memory_reserve_mb * MIB)
        self.lifecycle = Lifecycle(settings, self.registry, self.admission, self.mms, workers)
        self.supervisor = PoolSupervisor(self.mms, self.paths, workers, settings.load_timeout_s)

    # --- lifecycle -------------------------------------------------------------------------------------
    async def start(self, _app: web.Application | None = None) -> None:
        await self.mms.start()

    async def start_pool(self) -> None:
        """Once Multi Model Server answers: register the worker pool (the server is healthy only after this)."""
        await self.supervisor.start()

    async def close(self, _app: web.Application | None = None) -> None:
        await self.supervisor.close()
        await self.mms.close()
        self.registry.close()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.settings.max_request_bytes, middlewares=[self._errors])
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
            return _error(exc)
        except web.HTTPRequestEntityTooLarge:
            limit = self.settings.max_request_bytes
            return _error(PayloadTooLarge(f"request body is over the {limit}-byte limit; send fewer rows per request"))
        except web.HTTPException as exc:
            code = exc.reason.lower().replace(" ", "_")
            return web.Response(status=exc.status, body=render_error(code, exc.reason), content_type="application/json")
        except Exception:
            logger.exception("%s %s failed", request.method, request.path)
            return _error(GenesigError("the request failed; see the server log"))

    # --- routes ----------------------------------------------------------------------------------------
    async def ping(self, _request: web.Request) -> web.Response:
        if self.supervisor.healthy and await self.mms.ping():
            return _json(200, {"status": "Healthy"})
        return _json(503, {"status": "Unhealthy"})

    async def list_models(self, request: web.Request) -> web.Response:
        limit = _positive(request.query.get("limit"), "limit", LIST_LIMIT_DEFAULT)
        start = _positive(request.query.get("next_page_token"), "next_page_token", 0, allow_zero=True)
        names = sorted(self.lifecycle.loaded)
        page = names[start : start + min(limit, LIST_LIMIT_MAX)]
        body: dict[str, Any] = {
            "models": [{"modelName": n, "modelUrl": self.lifecycle.loaded[n].entry.url} for n in page]
        }
        if start + len(page) < len(names):
            body["nextPageToken"] = str(start + len(page))
        return _json(200, body)

    async def describe_model(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        loaded = self.lifecycle.loaded.get(name)
        if loaded is None or not self.lifecycle.accepting(name):
            raise ModelNotFound(f"model {name} is not loaded")
        slots = self.registry.slots()
        described = {
            "modelName": name,
            "modelUrl": loaded.entry.url,
            "status": "Healthy" if self.supervisor.healthy else "Unhealthy",
            "loadedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(loaded.loaded_at)),
            "costBytes": loaded.entry.cost_bytes,
            "workers": [{"pid": slot.pid, "signaturesOpen": slot.opened} for slot in slots],
            "genesig": manifest_summary(await asyncio.to_thread(read_manifest, Path(loaded.entry.url))),
        }
        return _json(200, described)

    async def load_model(self, request: web.Request) -> web.Response:
        try:
            spec = msgspec.json.decode(await request.read(), type=LoadRequest)
        except msgspec.DecodeError as exc:
            raise BadRequest(f'load body must be JSON {{"model_name": str, "url": str}}: {exc}') from None
        manifest = await self.lifecycle.load(spec.model_name, spec.url)
        return _json(200, {"status": f"model {spec.model_name} loaded", "model": manifest_summary(manifest)})

    async def unload_model(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        await self.lifecycle.unload(name)
        return _json(200, {"status": f"model {name} unloaded"})

    async def invoke(self, request: web.Request) -> web.Response:
        """Without nginx: the same routing nginx does (see :mod:`genesig.container.nginx`)."""
        name = request.match_info["name"]
        if not self.lifecycle.accepting(name):
            raise ModelNotFound(f"model {name} is not loaded")
        headers = {k: request.headers[k] for k in ("Content-Type", "Accept") if k in request.headers}
        headers[MODEL_HEADER] = quote(name, safe="")
        status, payload, content_type = await self.mms.invoke(
            POOL_MODEL, await request.read(), headers, timeout_s=self.settings.invoke_timeout_s
        )
        if status == 404 and self.lifecycle.accepting(name):
            status = 503  # the pool itself is not registered: it is being registered again
        if status == 404:
            raise ModelNotFound(f"model {name} is not loaded")
        if status in POOL_ERRORS and not _ours(payload):
            code, message = POOL_ERRORS[status]
            return web.Response(
                status=status, body=render_error(code, message.format(name=name)), content_type="application/json"
            )
        return web.Response(status=status, body=payload, headers={"Content-Type": content_type})


def _ours(payload: bytes) -> bool:
    """A body our handler wrote (``{"error": ...}``), as opposed to one of Multi Model Server's."""
    try:
        doc = msgspec.json.decode(payload)
    except msgspec.DecodeError:
        return False
    return isinstance(doc, dict) and "error" in doc and "type" not in doc


def _positive(value: str | None, name: str, default: int, *, allow_zero: bool = False) -> int:
    if value is None:
        return default
    if not value.isdigit() or (int(value) == 0 and not allow_zero):
        raise BadRequest(f"{name} must be a {'non-negative' if allow_zero else 'positive'} integer, got {value!r}")
    return int(value)
