"""A strict layer in front of moto: every SageMaker request is checked against botocore's service model (patterns,
lengths, value ranges, enums) and refused with AWS's own ValidationException when AWS would refuse it.

moto checks none of these, so without this layer a name AWS rejects (an underscore in a model package group, a
display name over 82 characters) passes every test. The layer is an HTTP proxy, so it sees every client: the test
process, the CLI in subprocesses and the jobs in containers on the host's network.
"""

from __future__ import annotations

import http.client
import http.server
import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import botocore.session
import regex  # AWS patterns are Java regexes with \\p{...} classes, which Python's re lacks
from botocore.model import Shape

TARGET_PREFIX = "SageMaker."


@dataclass
class Rejection:
    operation: str
    message: str


def _instances(operation: str, params: dict[str, Any]) -> int:
    """Instances a job-creating request asks for (what AWS bills for)."""
    try:
        if operation == "CreateTrainingJob":
            return int(params["ResourceConfig"]["InstanceCount"])
        if operation == "CreateProcessingJob":
            return int(params["ProcessingResources"]["ClusterConfig"]["InstanceCount"])
    except (KeyError, TypeError, ValueError):
        pass
    return 0


def _failed(value: Any, path: str, constraint: str) -> str:
    """AWS's own wording for one violated constraint."""
    return f"Value '{value}' at '{path}' failed to satisfy constraint: {constraint}"


def _member_path(path: str, name: str) -> str:
    member = name[:1].lower() + name[1:]
    return f"{path}.{member}" if path else member


class ServiceModelValidator:
    """What AWS checks on a request before it looks at anything else: each member against its shape's constraints."""

    def __init__(self, service: str) -> None:
        self.model = botocore.session.get_session().get_service_model(service)
        self._patterns: dict[str, Any] = {}

    def validate(self, operation: str, params: dict[str, Any]) -> list[str]:
        errors: list[str] = []
        input_shape = self.model.operation_model(operation).input_shape
        if input_shape is not None:
            self._check(input_shape, params, "", errors)
        return errors

    def _pattern(self, text: str) -> Any:
        if text not in self._patterns:
            self._patterns[text] = regex.compile(text)
        return self._patterns[text]

    def _check(self, shape: Shape, value: Any, path: str, errors: list[str]) -> None:
        meta = shape.metadata
        kind = shape.type_name
        if kind == "structure":
            for name, member in shape.members.items():  # type: ignore[attr-defined]
                if isinstance(value, dict) and name in value:
                    self._check(member, value[name], _member_path(path, name), errors)
            return
        if kind == "list" and isinstance(value, list):
            self._length(meta, len(value), value, path, errors, "length")
            for i, item in enumerate(value, start=1):
                self._check(shape.member, item, f"{path}.{i}.member", errors)  # type: ignore[attr-defined]
            return
        if kind == "map" and isinstance(value, dict):
            self._length(meta, len(value), value, path, errors, "length")
            for key, item in value.items():
                self._check(shape.key, key, f"{path}.{key}.key", errors)  # type: ignore[attr-defined]
                self._check(shape.value, item, f"{path}.{key}.value", errors)  # type: ignore[attr-defined]
            return
        if kind == "string" and isinstance(value, str):
            enum = getattr(shape, "enum", None)
            if enum and value not in enum:
                errors.append(_failed(value, path, f"Member must satisfy enum value set: [{', '.join(enum)}]"))
            self._length(meta, len(value), value, path, errors, "length")
            pattern = meta.get("pattern")
            if pattern and not self._pattern(pattern).fullmatch(value):
                errors.append(_failed(value, path, f"Member must satisfy regular expression pattern: {pattern}"))
            return
        if kind in ("integer", "long", "float", "double") and isinstance(value, int | float):
            if "min" in meta and value < meta["min"]:
                errors.append(_failed(value, path, f"Member must have value greater than or equal to {meta['min']}"))
            if "max" in meta and value > meta["max"]:
                errors.append(_failed(value, path, f"Member must have value less than or equal to {meta['max']}"))

    @staticmethod
    def _length(meta: dict[str, Any], size: int, value: Any, path: str, errors: list[str], what: str) -> None:
        if "min" in meta and size < meta["min"]:
            errors.append(_failed(value, path, f"Member must have {what} greater than or equal to {meta['min']}"))
        if "max" in meta and size > meta["max"]:
            errors.append(_failed(value, path, f"Member must have {what} less than or equal to {meta['max']}"))


@dataclass
class StrictProxy:
    """Forwards valid SageMaker JSON requests to ``upstream`` (moto); answers invalid ones 400 ValidationException."""

    upstream_port: int
    validator: ServiceModelValidator = field(default_factory=lambda: ServiceModelValidator("sagemaker"))
    rejections: list[Rejection] = field(default_factory=list)
    checked: int = 0
    # Every checked request by operation, and the instances the job-creating ones asked for.
    operations: Counter[str] = field(default_factory=Counter)
    instances: int = 0
    _server: http.server.ThreadingHTTPServer | None = None

    def start(self) -> int:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                target = self.headers.get("X-Amz-Target", "")
                if target.startswith(TARGET_PREFIX):
                    operation = target.removeprefix(TARGET_PREFIX)
                    params = json.loads(body or b"{}")
                    errors = proxy.validator.validate(operation, params)
                    proxy.checked += 1
                    proxy.operations[operation] += 1
                    proxy.instances += _instances(operation, params)
                    if errors:
                        count = f"{len(errors)} validation error{'s' if len(errors) > 1 else ''} detected"
                        message = f"{count}: {'; '.join(errors)}"
                        proxy.rejections.append(Rejection(operation, message))
                        self._answer(
                            400,
                            json.dumps({"__type": "ValidationException", "message": message}).encode(),
                            {"Content-Type": "application/x-amz-json-1.1"},
                        )
                        return
                self._forward("POST", body)

            def do_GET(self) -> None:  # noqa: N802
                self._forward("GET", b"")

            def _forward(self, method: str, body: bytes) -> None:
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "content-length")}
                upstream.request(method, self.path, body=body or None, headers=headers)
                response = upstream.getresponse()
                payload = response.read()
                passed = {
                    k: v
                    for k, v in response.getheaders()
                    if k.lower() not in ("connection", "content-length", "transfer-encoding")
                }
                upstream.close()
                self._answer(response.status, payload, passed)

            def _answer(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *_args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return int(self._server.server_address[1])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
