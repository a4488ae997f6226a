"""The Multi Model Server backend entry point ``handle(data, context)``; the only module that knows MMS's context.

A module-level function, not a handler class: MMS swallows errors raised in a
class's ``initialize`` (the load answers 200 and every invoke 500), while errors
from a function reach the load call (500, or 507 for ``MemoryError``).

It imports numpy and the artifact contract only, never torch: each loaded model
is one such process, so its imports decide cold-load time and models per GiB.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genesig.artifact import SignatureModel, load_model_dir
from genesig.container import codec
from genesig.container.settings import DRAIN_HEADER, ServingSettings, read_settings
from genesig.errors import BadRequest, GenesigError, PayloadTooLarge, UnsupportedMediaType

logger = logging.getLogger(__name__)


class ModelLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Prefixes every line with the model's name and version (the MMS name is an opaque hash)."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"model={self.extra['model']} {msg}", kwargs  # type: ignore[index]


@dataclass(frozen=True)
class LoadedModel:
    model: SignatureModel
    settings: ServingSettings
    id_columns: tuple[str, ...]
    log: ModelLogger


_loaded: LoadedModel | None = None


class QuietDisconnect(logging.Filter):
    """Multi Model Server's worker logs "Backend worker process died." with a traceback whenever the frontend
    closes its connection on purpose (an unload, a scale-down, a shutdown); say so in one line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, ValueError) and str(error) == "Frontend disconnected":
            record.msg, record.args = "the model server closed this worker's connection; the worker exits", ()
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def load(model_dir: Path, settings: ServingSettings) -> LoadedModel:
    """Verify and load the artifact, then run a warm-up prediction so the first invoke pays nothing extra."""
    started = time.perf_counter()
    logging.getLogger("genesig").setLevel(settings.log_level.upper())
    model = load_model_dir(model_dir)
    manifest = model.manifest
    log = ModelLogger(logger, {"model": f"{manifest.name}-v{manifest.version}"})
    warmup = model.predict(np.ones((1, len(manifest.genes))))
    codec.encode_response(manifest, warmup, None, codec.JSON)
    id_columns = tuple(dict.fromkeys((manifest.id_column, "id")))
    log.info(
        "loaded genes=%d target=%s kind=%s weights_bytes=%d seconds=%.3f",
        len(manifest.genes),
        manifest.target,
        manifest.model.kind,
        sum(f.bytes for f in manifest.files.values()),
        time.perf_counter() - started,
    )
    return LoadedModel(model=model, settings=settings, id_columns=id_columns, log=log)


def invoke(loaded: LoadedModel, body: bytes, content_type: str | None, accept: str | None) -> tuple[bytes, str]:
    """Decode, validate, predict, encode. Raises ``GenesigError`` with a 4xx status for bad requests."""
    started = time.perf_counter()
    response_type = codec.negotiate_accept(accept)
    manifest = loaded.model.manifest
    batch = codec.decode_request(body, content_type, manifest.genes, loaded.id_columns, loaded.settings.max_rows)
    predictions = loaded.model.predict(batch.matrix)
    payload = codec.encode_response(manifest, predictions, batch.ids, response_type)
    if len(payload) > loaded.settings.max_response_bytes:
        raise PayloadTooLarge(
            f"the response would be {len(payload)} bytes, over the {loaded.settings.max_response_bytes}-byte limit;"
            " send fewer rows per request"
        )
    loaded.log.info("invoked rows=%d ms=%.2f", batch.matrix.shape[0], (time.perf_counter() - started) * 1000)
    return payload, response_type


def _header(headers: dict[str, Any], name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers.items():
        if str(key).lower() == lowered:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


def _respond(context: Any, item: dict[str, Any], index: int) -> bytes:
    assert _loaded is not None
    headers = context.get_all_request_header(index) or {}
    if _header(headers, DRAIN_HEADER):
        # The gateway's drain marker: answered once every request queued before it has been (see Gateway._drain).
        context.set_response_content_type(index, codec.JSON)
        return b'{"drained":true}'
    content_type = _header(headers, "Content-Type")
    try:
        if "body" not in item:
            # MMS splits form and multipart bodies into named parts before we see them.
            raise UnsupportedMediaType(
                f"content type {codec.media_type(content_type) or '(none)'!r} is not supported; "
                f"send {' or '.join(codec.CONTENT_TYPES)}"
            )
        body = item["body"]
        if isinstance(body, str):
            body = body.encode()
        if not isinstance(body, bytes | bytearray):
            raise BadRequest("request body could not be read")
        payload, response_type = invoke(_loaded, bytes(body), content_type, _header(headers, "Accept"))
        context.set_response_content_type(index, response_type)
        return payload
    except GenesigError as exc:
        _loaded.log.info("rejected status=%d error=%s", exc.status, exc.code)
        return _error(context, index, exc.status, exc.to_body())
    except Exception:
        _loaded.log.exception("invocation failed")
        return _error(context, index, 500, {"error": "internal_error", "message": "prediction failed; see server log"})


def _error(context: Any, index: int, status: int, body: dict[str, Any]) -> bytes:
    context.set_response_content_type(index, codec.JSON)
    context.set_response_status(code=status, phrase=body["error"], idx=index)
    return codec.encode_error(body)


def handle(data: list[dict[str, Any]] | None, context: Any) -> list[bytes] | None:
    """MMS entry point: ``data is None`` means load; otherwise one response per request in the batch."""
    global _loaded
    if data is None:
        logging.getLogger().addFilter(QuietDisconnect())
        model_dir = Path(context.system_properties["model_dir"])
        _loaded = load(model_dir, read_settings())
        return None
    return [_respond(context, item, i) for i, item in enumerate(data)]
