"""The Multi Model Server entry point ``handle(data, context)``; the only module that knows MMS's context.

Multi Model Server runs one model, the worker pool (:mod:`genesig.container.pool`). Its load (``data is None``)
runs once, in the pool's server process (``preload_model``), before the workers are forked from it: they start
with the imports done and the numeric paths warm. Each invocation names its signature in the ``X-Genesig-Model``
header (nginx or the gateway set it from the request path); the worker opens the signature on first use.

A module-level function, not a handler class: MMS swallows errors raised in a class's ``initialize`` (the load
answers 200 and every invoke 500), while errors from a function reach the load call. It imports numpy and the
artifact contract only, never torch.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any
from urllib.parse import unquote

from genesig.container import codec
from genesig.container.pool import MODEL_HEADER, PoolPaths
from genesig.container.settings import DRAIN_HEADER, read_settings
from genesig.container.worker import OpenedModel, PoolWorker, warm_up
from genesig.errors import BadRequest, GenesigError, UnsupportedMediaType, render_error

logger = logging.getLogger(__name__)
# The per-signature metric sent through Multi Model Server's metrics (its own PredictionTime names only the pool).
SIGNATURE_METRIC = "SignaturePredictionTime"

_worker: PoolWorker | None = None


class QuietDisconnect(logging.Filter):
    """Multi Model Server's worker logs "Backend worker process died." with a traceback whenever the frontend
    closes its connection on purpose (a scale-down, a shutdown); say so in one line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, ValueError) and str(error) == "Frontend disconnected":
            record.msg, record.args = "the model server closed this worker's connection; the worker exits", ()
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def _header(headers: dict[str, Any], name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers.items():
        if str(key).lower() == lowered:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


def _body(item: dict[str, Any], content_type: str | None) -> bytes:
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
    return bytes(body)


def _record(context: Any, index: int, opened: OpenedModel, started: float) -> None:
    metrics = getattr(context, "metrics", None)
    if metrics is None:
        return
    try:
        from mms.metrics.dimension import Dimension
    except ImportError:  # outside Multi Model Server (unit tests)
        return
    elapsed_ms = (time.perf_counter() - started) * 1000
    metrics.add_time(SIGNATURE_METRIC, elapsed_ms, idx=index, dimensions=[Dimension("Signature", opened.label)])


def respond(worker: PoolWorker, context: Any, item: dict[str, Any], index: int) -> bytes:
    """One request of a batch: a fence marker, or an invocation of the signature its header names."""
    headers = context.get_all_request_header(index) or {}
    fence = _header(headers, DRAIN_HEADER)
    if fence:
        # The gateway's fence marker (see genesig.container.pool): answered once the gateway releases it.
        released = worker.fence(int(fence), worker.settings.drain_timeout_s)
        context.set_response_content_type(index, codec.JSON)
        return b'{"fenced":true}' if released else b'{"fenced":false}'
    content_type = _header(headers, "Content-Type")
    name = unquote(_header(headers, MODEL_HEADER) or "")
    started = time.perf_counter()
    try:
        if not name:
            raise BadRequest(f"the request names no model ({MODEL_HEADER} header)")
        payload, response_type, opened = worker.invoke(
            name, _body(item, content_type), content_type, _header(headers, "Accept")
        )
        context.set_response_content_type(index, response_type)
        _record(context, index, opened, started)
        return payload
    except GenesigError as exc:
        opened_model = worker.models.get(name)
        prefix = f"model={opened_model.label} " if opened_model else ""
        logger.info("%srejected status=%d error=%s", prefix, exc.status, exc.code)
        return _error(context, index, exc)
    except Exception:
        logger.exception("invocation failed")
        return _error(context, index, GenesigError("prediction failed; see the server log"))


def _error(context: Any, index: int, error: GenesigError) -> bytes:
    context.set_response_content_type(index, codec.JSON)
    context.set_response_status(code=error.status, phrase=error.code, idx=index)
    return render_error(error.code, error.message, error.detail)


def handle(data: list[dict[str, Any]] | None, context: Any) -> list[bytes] | None:
    """MMS entry point: ``data is None`` is the pool's load; otherwise one response per request in the batch."""
    global _worker
    if data is None:
        logging.getLogger().addFilter(QuietDisconnect())
        settings = read_settings()
        logging.getLogger("genesig").setLevel(settings.log_level.upper())
        warm_up()
        _worker = PoolWorker(PoolPaths.under(settings.state_dir), settings)
        # Workers are forked from this process (preload_model): each opens its slot as it starts.
        os.register_at_fork(after_in_child=_worker.after_fork)
        logger.info("worker pool ready")
        return None
    assert _worker is not None, "the pool was not loaded"
    return [respond(_worker, context, item, i) for i, item in enumerate(data)]
