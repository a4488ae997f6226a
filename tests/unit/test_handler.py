"""The MMS adapter, driven through MMS's own Context class exactly as a model backend calls it."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from mms.context import Context, RequestProcessor

from genesig.artifact import load_model_dir
from genesig.artifact.manifest import WEIGHTS_FILENAME
from genesig.container import handler
from genesig.errors import ArtifactError


def mms_context(model_dir: Path) -> Context:
    return Context("0f3a9c", str(model_dir), None, 1, None, "1.1.11")


def invoke(context: Context, body: bytes | None, headers: dict[str, str]) -> tuple[int, str, bytes]:
    context.request_processor = [RequestProcessor(headers)]
    item = {} if body is None else {"body": body}
    [payload] = handler.handle([item], context)  # type: ignore[misc]
    processor = context.request_processor[0]
    return processor.get_response_status_code(), context.get_response_content_type(0), payload


@pytest.fixture
def loaded(make_model_dir: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> Context:
    monkeypatch.setenv("GENESIG_MAX_ROWS", "5")
    context = mms_context(make_model_dir("metagene_19", seed=2))
    assert handler.handle(None, context) is None
    return context


def test_load_then_predict_matches_the_artifact(loaded: Context) -> None:
    status, content_type, payload = invoke(loaded, b'{"inputs": [[1.5, 0, 7]]}', {"Content-Type": "application/json"})
    assert (status, content_type) == (200, "application/json")
    expected = load_model_dir(Path(loaded.system_properties["model_dir"])).predict([[1.5, 0, 7]])  # type: ignore[arg-type]
    assert json.loads(payload)["predictions"][0]["probability"] == expected.values[0]


def test_header_names_are_matched_case_insensitively(loaded: Context) -> None:
    status, content_type, payload = invoke(
        loaded, b"LRIG1,HPGD,GDF15\n1,2,3\n", {"content-type": "text/csv", "ACCEPT": "text/csv"}
    )
    assert (status, content_type) == (200, "text/csv")
    assert payload.startswith(b"probability,risk_group,model,version\n")


@pytest.mark.parametrize(
    ("body", "headers", "status", "error"),
    [
        (b'[{"LRIG1": 1}]', {"Content-Type": "application/json"}, 400, "bad_request"),
        (b"{}", {"Content-Type": "application/xml"}, 415, "unsupported_media_type"),
        (None, {"Content-Type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"),
        (b'{"inputs": [[1,2,3]]}', {"Content-Type": "application/json", "Accept": "image/png"}, 406, "not_acceptable"),
        (
            b'{"inputs": ' + json.dumps([[1, 2, 3]] * 6).encode() + b"}",
            {"Content-Type": "application/json"},
            413,
            "payload_too_large",
        ),
    ],
)
def test_bad_requests_get_a_json_4xx_without_traceback(
    loaded: Context, body: bytes | None, headers: dict[str, str], status: int, error: str
) -> None:
    got_status, content_type, payload = invoke(loaded, body, headers)
    doc = json.loads(payload)
    assert (got_status, content_type, doc["error"]) == (status, "application/json", error)
    assert "Traceback" not in payload.decode() and "Error" not in doc["message"]


def test_unexpected_failure_is_500_with_a_generic_body_and_a_logged_traceback(
    loaded: Context, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(*_args: object) -> None:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(handler.codec, "encode_response", explode)
    with caplog.at_level(logging.ERROR):
        status, _, payload = invoke(loaded, b'{"inputs": [[1,2,3]]}', {"Content-Type": "application/json"})
    assert status == 500
    assert b"secret" not in payload and b"Traceback" not in payload
    assert "secret internal detail" in caplog.text


def test_logs_name_the_model_and_never_the_values(loaded: Context, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="genesig"):
        invoke(loaded, b'{"inputs": [[123.456, 0, 7]]}', {"Content-Type": "application/json"})
        invoke(loaded, b'[{"LRIG1": 987.654}]', {"Content-Type": "application/json"})
    assert "model=metagene_19-v1" in caplog.text
    assert "123.456" not in caplog.text and "987.654" not in caplog.text


def test_a_corrupt_artifact_fails_the_load(make_model_dir: Callable[..., Path]) -> None:
    model_dir = make_model_dir("broken")
    (model_dir / WEIGHTS_FILENAME).write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match="sha256"):
        handler.handle(None, mms_context(model_dir))
