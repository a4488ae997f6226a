"""The MMS adapter, driven through MMS's own Context class exactly as a pool worker calls it: the pool loaded once,
signatures named per request, opened on first use from the entries the gateway writes."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mms.context import Context, RequestProcessor

from genesig.artifact import load_model_dir, read_manifest
from genesig.artifact.manifest import WEIGHTS_FILENAME
from genesig.container import handler
from genesig.container.pool import MODEL_HEADER, POOL_MODEL, Entry, PoolPaths, PoolRegistry

NAME = "0f3a9c"


def pool_context(state: Path) -> Context:
    return Context(POOL_MODEL, str(PoolPaths.under(state).model_dir), None, 1, None, "1.1.11")


def invoke(context: Context, body: bytes | None, headers: dict[str, str], name: str = NAME) -> tuple[int, str, bytes]:
    context.request_processor = [RequestProcessor({MODEL_HEADER: name, **headers})]
    item = {} if body is None else {"body": body}
    [payload] = handler.handle([item], context)  # type: ignore[misc]
    processor = context.request_processor[0]
    return processor.get_response_status_code(), context.get_response_content_type(0), payload


def register(registry: PoolRegistry, name: str, model_dir: Path) -> None:
    manifest = read_manifest(model_dir)
    entry = Entry(registry.new_load_id(), name, str(model_dir), manifest.name, manifest.version, 1)
    registry.write_entry(entry)


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PoolRegistry]:
    monkeypatch.setenv("GENESIG_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("GENESIG_MAX_ROWS", "5")
    registry = PoolRegistry(PoolPaths.under(tmp_path / "state"))
    yield registry
    registry.close()


@pytest.fixture
def loaded(registry: PoolRegistry, make_model_dir: Callable[..., Path], tmp_path: Path) -> Context:
    register(registry, NAME, make_model_dir("metagene_19", seed=2))
    context = pool_context(tmp_path / "state")
    assert handler.handle(None, context) is None
    return context


def test_load_then_predict_matches_the_artifact(loaded: Context) -> None:
    status, content_type, payload = invoke(loaded, b'{"inputs": [[1.5, 0, 7]]}', {"Content-Type": "application/json"})
    assert (status, content_type) == (200, "application/json")
    entry = handler._worker.view.entry(NAME)  # type: ignore[union-attr]
    assert entry is not None
    expected = load_model_dir(Path(entry.url)).predict([[1.5, 0, 7]])  # type: ignore[arg-type]
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


def test_a_signature_is_opened_once_per_worker_and_unknown_names_are_404(
    loaded: Context, registry: PoolRegistry, make_model_dir: Callable[..., Path]
) -> None:
    assert invoke(loaded, b'{"inputs": [[1, 2, 3]]}', {"Content-Type": "application/json"})[0] == 200
    opened = handler._worker.models[NAME]  # type: ignore[union-attr]
    assert invoke(loaded, b'{"inputs": [[1, 2, 3]]}', {"Content-Type": "application/json"})[0] == 200
    assert handler._worker.models[NAME] is opened  # type: ignore[union-attr]
    status, _, payload = invoke(loaded, b"{}", {"Content-Type": "application/json"}, name="never-loaded")
    assert (status, json.loads(payload)["error"]) == (404, "model_not_found")
    status, _, payload = invoke(loaded, b"{}", {"Content-Type": "application/json"}, name="")
    assert status == 400 and MODEL_HEADER in json.loads(payload)["message"]
    # Another signature in the same worker; then the first is removed: the worker drops it on its next request.
    register(registry, "other", make_model_dir("metagene_10", seed=3))
    assert invoke(loaded, b'{"inputs": [[1, 2, 3]]}', {"Content-Type": "application/json"}, name="other")[0] == 200
    registry.remove_entries([NAME])
    assert invoke(loaded, b'{"inputs": [[1, 2, 3]]}', {"Content-Type": "application/json"}, name="other")[0] == 200
    assert set(handler._worker.models) == {"other"}  # type: ignore[union-attr]
    assert invoke(loaded, b'{"inputs": [[1, 2, 3]]}', {"Content-Type": "application/json"})[0] == 404


def test_a_percent_encoded_name_is_decoded(
    registry: PoolRegistry, make_model_dir: Callable[..., Path], tmp_path: Path
) -> None:
    register(registry, "odd name é", make_model_dir())
    context = pool_context(tmp_path / "state")
    handler.handle(None, context)
    assert (
        invoke(context, b'{"inputs": [[1, 2, 3]]}', {"Content-Type": "application/json"}, "odd%20name%20%C3%A9")[0]
        == 200
    )


def test_a_corrupt_artifact_is_a_422_for_its_requests_only(
    registry: PoolRegistry, make_model_dir: Callable[..., Path], tmp_path: Path
) -> None:
    model_dir = make_model_dir("broken")
    register(registry, "broken", model_dir)
    register(registry, NAME, make_model_dir("metagene_19", seed=2))
    (model_dir / WEIGHTS_FILENAME).write_bytes(b"garbage")
    context = pool_context(tmp_path / "state")
    handler.handle(None, context)
    status, _, payload = invoke(context, b'{"inputs": [[1, 2, 3]]}', {"Content-Type": "application/json"}, "broken")
    assert (status, json.loads(payload)["error"]) == (422, "invalid_artifact")
    assert invoke(context, b'{"inputs": [[1, 2, 3]]}', {"Content-Type": "application/json"})[0] == 200
