"""Every MME call and error status against the real server (nginx + gateway + MMS + our backends)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
import pytest

from genesig.artifact import load_model_dir
from genesig.client import ModelServerClient, Response
from genesig.container.pool import PoolPaths, live_slots
from genesig.container.supervision import pool_processes
from genesig.server_process import ServerProcess

from .conftest import ServerFactory, opaque

ROWS = [[3.2, 0.0, 11.5], [0.4, 7.25, 2.0], [15.0, 1.0, 0.0]]


@pytest.fixture(scope="module")
def server(start_server: ServerFactory) -> ServerProcess:
    return start_server({"GENESIG_MAX_ROWS": "50"})


@pytest.fixture
def client(server: ServerProcess) -> ModelServerClient:
    with ModelServerClient(server.url) as c:
        yield c  # type: ignore[misc]


@pytest.fixture
def loaded(
    client: ModelServerClient, model_dirs: Callable[..., Path], request: pytest.FixtureRequest
) -> tuple[str, Path]:
    """A model loaded under an opaque name for this test only, unloaded afterwards."""
    model_dir = model_dirs(f"t{abs(hash(request.node.name)) % 10**8}", seed=5)
    name = opaque(str(model_dir))
    assert client.load(name, str(model_dir)).status == 200
    yield name, model_dir  # type: ignore[misc]
    client.unload(name)


def assert_clean_error(response: Response, status: int, error: str) -> dict[str, object]:
    assert response.status == status, response.body
    assert response.content_type.startswith("application/json")
    doc = response.json()
    assert doc["error"] == error
    text = response.body.decode()
    assert "Traceback" not in text and "Exception" not in text
    return doc


def test_ping(client: ModelServerClient) -> None:
    response = client.request("GET", "/ping")
    assert response.status == 200 and response.json()["status"] == "Healthy"


def test_lifecycle_load_describe_list_paginate_unload(
    client: ModelServerClient, model_dirs: Callable[..., Path]
) -> None:
    dirs = {opaque(f"life{i}"): model_dirs(f"life{i}", version=i + 1) for i in range(3)}
    for name, model_dir in dirs.items():
        response = client.load(name, str(model_dir))
        assert response.status == 200 and response.json()["model"]["genes"] == ["LRIG1", "HPGD", "GDF15"]

    described = client.describe(next(iter(dirs))).json()
    assert described["genesig"]["version"] == 1 and described["genesig"]["target"] == "binary"
    assert described["genesig"]["output"]["risk_groups"]["labels"] == ["low", "high"]

    seen: list[str] = []
    token = None
    for _ in range(10):
        page = client.list(limit=2, next_page_token=token).json()
        assert len(page["models"]) <= 2
        seen += [m["modelName"] for m in page["models"]]
        token = page.get("nextPageToken")
        if not token:
            break
    assert set(dirs) <= set(seen) and len(seen) == len(set(seen))

    for name in dirs:
        assert client.unload(name).status == 200
        assert_clean_error(client.describe(name), 404, "model_not_found")
        assert_clean_error(client.unload(name), 404, "model_not_found")


def test_second_load_is_409(client: ModelServerClient, loaded: tuple[str, Path]) -> None:
    name, model_dir = loaded
    assert_clean_error(client.load(name, str(model_dir)), 409, "conflict")


def test_every_request_format_gives_the_artifacts_own_prediction(
    client: ModelServerClient, loaded: tuple[str, Path]
) -> None:
    name, model_dir = loaded
    expected = load_model_dir(model_dir).predict(np.array(ROWS))
    genes = ["LRIG1", "HPGD", "GDF15"]
    order = ["GDF15", "Case_ID", "LRIG1", "HPGD"]
    records = [{"Case_ID": f"P{i}", **dict(zip(genes, row, strict=True))} for i, row in enumerate(ROWS)]
    csv_body = ",".join(order) + "\n" + "".join(",".join(str(rec[c]) for c in order) + "\n" for rec in records)
    bodies = [
        (json.dumps({"inputs": ROWS}), "application/json"),
        (json.dumps({"columns": order, "data": [[rec[c] for c in order] for rec in records]}), "application/json"),
        (json.dumps(records), "application/json"),
        (csv_body, "text/csv"),
    ]
    for body, content_type in bodies:
        response = client.invoke(name, body.encode(), content_type)
        assert response.status == 200, response.body
        doc = response.json()
        assert [p["probability"] for p in doc["predictions"]] == expected.values.tolist()
        assert [p["risk_group"] for p in doc["predictions"]] == expected.groups
        assert (doc["model"], doc["version"]) == (load_model_dir(model_dir).manifest.name, 1)
    csv_answer = client.invoke(name, csv_body.encode(), "text/csv", accept="text/csv")
    assert csv_answer.status == 200 and csv_answer.content_type.startswith("text/csv")
    assert csv_answer.body.decode().splitlines()[1].startswith("P0,")


@pytest.mark.parametrize(
    ("body", "content_type", "accept", "status", "error"),
    [
        (b'[{"LRIG1": 1.0}]', "application/json", None, 400, "bad_request"),
        (b'[{"LRIG1": 1, "HPGD": "high", "GDF15": 2}]', "application/json", None, 400, "bad_request"),
        (b"LRIG1,HPGD,GDF15\n1,nan,2\n", "text/csv", None, 400, "bad_request"),
        (b"{truncated", "application/json", None, 400, "bad_request"),
        (b"<xml/>", "application/xml", None, 415, "unsupported_media_type"),
        (b"a=1&b=2", "application/x-www-form-urlencoded", None, 415, "unsupported_media_type"),
        (b'{"inputs": [[1,2,3]]}', "application/json", "application/xml", 406, "not_acceptable"),
        (json.dumps({"inputs": [[1, 2, 3]] * 51}).encode(), "application/json", None, 413, "payload_too_large"),
        (b"LRIG1,HPGD,GDF15\n" + b"1,2,3\n" * 1_200_000, "text/csv", None, 413, "payload_too_large"),
    ],
)
def test_bad_input_gets_a_clear_4xx_and_the_model_keeps_serving(
    client: ModelServerClient,
    loaded: tuple[str, Path],
    body: bytes,
    content_type: str,
    accept: str | None,
    status: int,
    error: str,
) -> None:
    name, _ = loaded
    doc = assert_clean_error(client.invoke(name, body, content_type, accept), status, error)
    assert doc["message"]
    assert client.invoke(name, b'{"inputs": [[1, 2, 3]]}').status == 200


def test_missing_genes_are_named(client: ModelServerClient, loaded: tuple[str, Path]) -> None:
    name, _ = loaded
    doc = assert_clean_error(client.invoke(name, b'[{"LRIG1": 1.0}]'), 400, "bad_request")
    assert doc["detail"]["missing_genes"] == ["HPGD", "GDF15"]  # type: ignore[index]


def test_unknown_model_is_404(client: ModelServerClient) -> None:
    # Names that could break a JSON body are not echoed (a quote, a backslash, a control character, non-ASCII).
    for odd in ('a"b', "a\\b", "a\nb", "\u00e9t\u00e9", "%", "x" * 300):
        doc = assert_clean_error(client.invoke(odd, b'{"inputs": [[1,2,3]]}'), 404, "model_not_found")
        assert "(name not shown)" in doc["message"]
    doc = assert_clean_error(client.invoke("never-loaded", b'{"inputs": [[1,2,3]]}'), 404, "model_not_found")
    assert "never-loaded" in doc["message"]  # type: ignore[operator]


def test_invalid_artifact_is_refused_and_leaves_no_registration(
    client: ModelServerClient, model_dirs: Callable[..., Path]
) -> None:
    model_dir = model_dirs("tampered")
    good_weights = (model_dir / "weights.safetensors").read_bytes()
    (model_dir / "weights.safetensors").write_bytes(good_weights[:-4] + b"\0\0\0\0")
    name = opaque("tampered")
    doc = assert_clean_error(client.load(name, str(model_dir)), 422, "invalid_artifact")
    assert "sha256" in doc["message"]  # type: ignore[operator]
    assert name not in [m["modelName"] for m in client.list().json()["models"]]
    (model_dir / "weights.safetensors").write_bytes(good_weights)
    assert client.load(name, str(model_dir)).status == 200
    assert client.unload(name).status == 200


def test_concurrent_invokes_on_several_models_never_mix_them_up(
    client: ModelServerClient, server: ServerProcess, model_dirs: Callable[..., Path]
) -> None:
    models = {opaque(f"conc{i}"): model_dirs(f"conc{i}", seed=10 + i) for i in range(4)}
    expected = {}
    for name, model_dir in models.items():
        assert client.load(name, str(model_dir)).status == 200
        expected[name] = load_model_dir(model_dir).predict(np.array(ROWS)).values.tolist()
    failures: list[str] = []
    body = json.dumps({"inputs": ROWS}).encode()

    def worker(i: int) -> None:
        name = list(models)[i % len(models)]
        with ModelServerClient(server.url) as own:
            for _ in range(40):
                response = own.invoke(name, body)
                if (
                    response.status != 200
                    or [p["probability"] for p in response.json()["predictions"]] != expected[name]
                ):
                    failures.append(f"{name}: {response.status}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name in models:
        client.unload(name)
    assert failures == []


def test_a_load_starts_no_process_and_an_unload_frees_the_signature_in_every_worker(
    client: ModelServerClient, server: ServerProcess, model_dirs: Callable[..., Path]
) -> None:
    model_dir = model_dirs("reload")
    name = opaque("reload")
    assert server.process is not None

    def processes() -> set[int]:
        return {p.pid for p in server.descendants() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE}

    before = processes()
    started = time.perf_counter()
    assert client.load(name, str(model_dir)).status == 200
    load_s = time.perf_counter() - started
    assert processes() == before, "a load starts no process: the pool's workers answer for it"
    _, workers = pool_processes(server.process.pid)
    for _ in range(4 * len(workers)):
        assert client.invoke(name, b'{"inputs": [[1,2,3]]}').status == 200
    described = client.describe(name).json()
    assert sum(w["signaturesOpen"] for w in described["workers"]) >= 1
    assert client.unload(name).status == 200
    slots = live_slots(PoolPaths.under(server.state_dir))
    assert slots and all(slot.opened == 0 for slot in slots), "every worker dropped it before the unload answered"
    assert processes() == before
    assert client.load(name, str(model_dir)).status == 200
    assert client.invoke(name, b'{"inputs": [[1,2,3]]}').status == 200
    assert client.unload(name).status == 200
    assert load_s < 1.0, f"a load took {load_s:.2f} s"


def test_the_server_log_is_free_of_false_alarms(start_server: ServerFactory, model_dirs: Callable[..., Path]) -> None:
    """No pkg_resources deprecation warning at start, no traceback from loads, invokes and unloads."""
    server = start_server()
    model_dir = model_dirs("quiet", seed=2)
    with ModelServerClient(server.url) as client:
        for _ in range(30):
            assert client.load("quiet", str(model_dir)).status == 200
            assert client.invoke("quiet", json.dumps({"inputs": ROWS}).encode()).status == 200
            assert client.unload("quiet").status == 200
    time.sleep(0.5)  # the workers' last lines reach the log
    log = server.log_path.read_text()
    assert "pkg_resources" not in log
    assert "Traceback" not in log, log[log.find("Traceback") - 500 : log.find("Traceback") + 500]


def test_the_jvm_heap_follows_the_container_memory_limit(start_server: ServerFactory) -> None:
    """The toolkit's default JVM options turn container support off (the heap then follows the host's memory)."""
    server = start_server()
    jvm = next(
        p
        for p in psutil.Process(server.process.pid).children(recursive=True)  # type: ignore[union-attr]
        if "com.amazonaws.ml.mms.ModelServer" in p.cmdline()
    )
    args = jvm.cmdline()
    assert "-XX:+UseContainerSupport" in args and "-XX:-UseContainerSupport" not in args
    assert any(a.startswith("-XX:MaxRAMPercentage=") for a in args)
