"""One error hierarchy for the whole product: every error carries its HTTP status and a public message, and one
renderer writes every JSON error body the server answers (the gateway's, the workers', and nginx's fixed ones)."""

from __future__ import annotations

from typing import Any

import msgspec

_encoder = msgspec.json.Encoder()


def error_body(code: str, message: str, detail: Any = None) -> dict[str, Any]:
    """The JSON error body: ``{"error": code, "message": ..., "detail": ...}`` (``detail`` only when given)."""
    body: dict[str, Any] = {"error": code, "message": message}
    if detail is not None:
        body["detail"] = detail
    return body


def render_error(code: str, message: str, detail: Any = None) -> bytes:
    return _encoder.encode(error_body(code, message, detail))


class GenesigError(Exception):
    """Base of every error we raise on purpose.

    ``message`` is safe to show to a caller (no patient values, no paths from
    inside the container unless they are the caller's own input); ``detail`` is
    optional structured context such as the list of missing genes.
    """

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def to_body(self) -> dict[str, Any]:
        return error_body(self.code, self.message, self.detail)

    def render(self) -> bytes:
        return render_error(self.code, self.message, self.detail)


class BadRequest(GenesigError):
    status = 400
    code = "bad_request"


class ArtifactError(GenesigError):
    """A model artifact or its manifest is invalid, unsafe or unsupported."""

    status = 422
    code = "invalid_artifact"


class ModelNotFound(GenesigError):
    status = 404
    code = "model_not_found"


class ModelUnreadable(GenesigError):
    """The model server's user may not read a model folder or file (a mount or permission problem, not the
    artifact's fault)."""

    status = 403
    code = "model_unreadable"


class Conflict(GenesigError):
    status = 409
    code = "conflict"


class PayloadTooLarge(GenesigError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(GenesigError):
    status = 415
    code = "unsupported_media_type"


class NotAcceptable(GenesigError):
    status = 406
    code = "not_acceptable"


class InsufficientMemory(GenesigError):
    """Loading would not fit in memory: SageMaker answers a 507 by unloading LRU models and retrying."""

    status = 507
    code = "insufficient_memory"


class InsufficientStorage(GenesigError):
    """No disk space left to write a model (the model cache is full); the artifact itself is fine."""

    status = 507
    code = "insufficient_storage"


class ModelServerError(GenesigError):
    """The model server behind the gateway failed or is unreachable."""

    status = 502
    code = "model_server_error"


class DataError(GenesigError):
    """A data file or gene-set file is invalid (raised by the pipeline side)."""

    status = 400
    code = "invalid_data"
