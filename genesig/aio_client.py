"""The asynchronous client of the MME container API (``/ping``, ``/models``, ``/models/{name}``,
``/models/{name}/invoke``), which Multi Model Server and ``genesig serve`` both speak: the gateway uses it in front of
Multi Model Server, the local endpoint in front of the server. One keep-alive connection pool per client.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiohttp

from genesig.errors import ModelServerError


class AsyncModelServerClient:
    def __init__(self, url: str, *, connections: int = 64, timeout_s: float = 120.0) -> None:
        self.url = url.rstrip("/")
        self.connections = connections
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.connections, keepalive_timeout=60)
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self, method: str, path: str, *, timeout_s: float | None = None, **kwargs: Any
    ) -> tuple[int, bytes, str]:
        """(status, body, content type); a server that does not answer is a ``ModelServerError`` (502)."""
        assert self._session is not None, "client not started"
        timeout = aiohttp.ClientTimeout(total=timeout_s or self.timeout_s)
        try:
            async with self._session.request(method, self.url + path, timeout=timeout, **kwargs) as resp:
                return resp.status, await resp.read(), resp.headers.get("Content-Type", "application/json")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ModelServerError(f"model server did not answer {method} {path}: {type(exc).__name__}") from None

    async def ping(self, timeout_s: float = 5.0) -> bool:
        try:
            status, _, _ = await self.request("GET", "/ping", timeout_s=timeout_s)
        except ModelServerError:
            return False
        return status == 200

    async def load(
        self, name: str, url: str, *, timeout_s: float | None = None, **extra: Any
    ) -> tuple[int, bytes, str]:
        return await self.request(
            "POST", "/models", json={"model_name": name, "url": url, **extra}, timeout_s=timeout_s
        )

    async def unload(self, name: str, *, timeout_s: float | None = None) -> tuple[int, bytes, str]:
        return await self.request("DELETE", model_path(name), timeout_s=timeout_s)

    async def describe(self, name: str, *, timeout_s: float | None = None) -> tuple[int, bytes, str]:
        return await self.request("GET", model_path(name), timeout_s=timeout_s)

    async def invoke(
        self, name: str, body: bytes, headers: dict[str, str], *, timeout_s: float | None = None
    ) -> tuple[int, bytes, str]:
        skip = () if "Content-Type" in headers else ("Content-Type",)
        return await self.request(
            "POST",
            model_path(name) + "/invoke",
            data=body,
            headers=headers,
            skip_auto_headers=skip,
            timeout_s=timeout_s,
        )


def model_path(name: str) -> str:
    return f"/models/{quote(name, safe='')}"
