"""Errors answered the way SageMaker Runtime answers them, and the TargetModel check."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web

from genesig.errors import GenesigError


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


def unreachable(exc: GenesigError) -> EndpointError:
    """The model server did not answer: SageMaker's 503."""
    return EndpointError(503, "ServiceUnavailable", exc.message)


def error_message(body: bytes) -> str:
    """The model server's JSON error message, or its body as text."""
    try:
        return str(msgspec.json.decode(body)["message"])
    except (msgspec.DecodeError, KeyError, TypeError):
        return body.decode(errors="replace")


def opaque_name(target: str) -> str:
    """The name the model server knows a TargetModel by: SageMaker hands the container a hash, not the string."""
    return hashlib.sha256(target.encode()).hexdigest()[:32]


def check_target(target: str | None) -> str:
    if not target:
        raise EndpointError(400, "ValidationError", "this endpoint is a multi-model endpoint: set TargetModel")
    target = target.lstrip("/")  # the AWS sample sends "/model-<group>.tar.gz"
    parts = Path(target).parts
    if not target or ".." in parts or target.startswith("/") or len(target) > 1024:
        raise EndpointError(400, "ValidationError", f"invalid TargetModel {target!r}")
    return target
