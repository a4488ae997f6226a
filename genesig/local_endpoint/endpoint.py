"""The local endpoint's HTTP side: SageMaker Runtime's ``POST /endpoints/{name}/invocations`` with the TargetModel
header, ``/ping`` and ``/metrics``; an invocation loads its model when needed (the loader) and maps the model
server's errors to SageMaker's (``ModelError``: 424 with the original status and body)."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from aiohttp import web

from genesig.aio_client import AsyncModelServerClient
from genesig.container.settings import SAGEMAKER_MAX_PAYLOAD_BYTES
from genesig.errors import ModelServerError
from genesig.local_endpoint.cache import ArtifactCache
from genesig.local_endpoint.errors import EndpointError, check_target, unreachable
from genesig.local_endpoint.loader import ModelLoader
from genesig.local_endpoint.source import ModelSource
from genesig.local_endpoint.stats import EndpointStats

logger = logging.getLogger("genesig.local_endpoint")
INVOKE_ATTEMPTS = 5
# Response header: "miss" when this request waited for its model to be loaded (a cold start), else "hit".
CACHE_HEADER = "X-Genesig-Model-Cache"


class LocalEndpoint:
    """A multi-model endpoint in front of a model server: the disk cache, the loader and the counts, and the routes
    that use them."""

    def __init__(
        self,
        source: ModelSource,
        model_server_url: str,
        cache_dir: Path,
        cache_max_bytes: int,
        model_url_root: str | None = None,
    ) -> None:
        self.client = AsyncModelServerClient(model_server_url)
        self.stats = EndpointStats()
        self.cache = ArtifactCache(source, cache_dir, cache_max_bytes, pinned=lambda target: self.loader.pinned(target))
        self.loader = ModelLoader(self.client, self.cache, self.stats, model_url_root or str(self.cache.folder))

    async def start(self, _app: web.Application | None = None) -> None:
        self.cache.start()
        await self.client.start()

    async def close(self, _app: web.Application | None = None) -> None:
        self.stats.log_totals(self.loader.loaded, self.cache.bytes)
        await self.client.close()

    async def invoke(self, target: str, body: bytes, content_type: str | None, accept: str | None) -> web.Response:
        headers = {k: v for k, v in (("Content-Type", content_type), ("Accept", accept)) if v}
        warm = True
        in_flight = self.loader.in_flight
        for attempt in range(INVOKE_ATTEMPTS):
            opaque, found = await self.loader.ensure_loaded(target)
            warm = warm and found
            started = time.perf_counter()
            in_flight[target] += 1
            try:
                status, payload, response_type = await self.client.invoke(opaque, body, headers)
            except ModelServerError as exc:
                raise unreachable(exc) from None
            finally:
                in_flight[target] -= 1
                if not in_flight[target]:
                    del in_flight[target]
            last = attempt == INVOKE_ATTEMPTS - 1
            if status == 404 and not last:  # unloaded behind our back (another client): load again
                self.loader.forget(target)
                continue
            if status == 503 and not last:  # the model's worker is starting or busy: retry shortly
                await asyncio.sleep(0.2 * 2**attempt)
                continue
            stats = self.stats.of(target)
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
        return web.json_response(self.stats.snapshot(self.loader.loaded, self.cache.bytes))

    async def _ping(self, _request: web.Request) -> web.Response:
        healthy = await self.client.ping()
        return web.json_response({"status": "Healthy" if healthy else "Unhealthy"}, status=200 if healthy else 503)
