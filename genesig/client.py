"""A small client for the MME container API (``/models``, ``/models/{name}/invoke``, ``/ping``).

Standard library only, with one persistent connection per client, so it is cheap
enough for benchmarks and importable anywhere.
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urlsplit


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


class ModelServerClient:
    """Keep-alive HTTP client; reconnects once when the server closed the connection (MMS does after errors)."""

    def __init__(self, url: str, timeout: float = 65.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"model server URL must look like http://host:port, got {url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> ModelServerClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> Response:
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self._conn.request(method, path, body=body, headers=headers or {})
                raw = self._conn.getresponse()
                payload = raw.read()
                response = Response(raw.status, payload, {k.lower(): v for k, v in raw.getheaders()})
                if raw.will_close:
                    self.close()
                return response
            except (ConnectionError, http.client.RemoteDisconnected, http.client.CannotSendRequest):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def ping(self) -> bool:
        try:
            return self.request("GET", "/ping").status == 200
        except OSError:
            return False

    def load(self, name: str, model_dir: str) -> Response:
        body = json.dumps({"model_name": name, "url": model_dir}).encode()
        return self.request("POST", "/models", body, {"Content-Type": "application/json"})

    def list(self, limit: int | None = None, next_page_token: str | None = None) -> Response:
        query = {k: v for k, v in (("limit", limit), ("next_page_token", next_page_token)) if v is not None}
        return self.request("GET", "/models" + (f"?{urlencode(query)}" if query else ""))

    def describe(self, name: str) -> Response:
        return self.request("GET", f"/models/{quote(name, safe='')}")

    def unload(self, name: str) -> Response:
        return self.request("DELETE", f"/models/{quote(name, safe='')}")

    def invoke(
        self, name: str, body: bytes, content_type: str = "application/json", accept: str | None = None
    ) -> Response:
        headers = {"Content-Type": content_type}
        if accept:
            headers["Accept"] = accept
        return self.request("POST", f"/models/{quote(name, safe='')}/invoke", body, headers)
