"""Property-based bad input against the running server: every request gets a 4xx with a JSON message or a valid
200 — never a 5xx, never a dead worker — and a normal request right after still succeeds.

Hypothesis generates the requests; the counts of cases and statuses are written to ``hardening-inputs.json``
in pytest's temporary folder and recorded as test properties (``-rA`` or ``--junitxml`` shows them).
"""

from __future__ import annotations

import json
import math
import signal
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genesig.artifact.synthetic import write_synthetic_artifact
from genesig.client import ModelServerClient, Response
from genesig.container.settings import ServingSettings
from genesig.container.supervision import pool_processes
from genesig.local_endpoint import runtime_client, start_local_endpoint
from genesig.server_process import ServerProcess

from .conftest import GENES, ServerFactory, opaque

EXAMPLES = 200
NORMAL = b'{"inputs": [[1.5, 0, 3]]}'
CONTENT_TYPES = [
    "application/json",
    "text/csv",
    "application/jsonlines",
    "text/plain",
    "application/x-npy",
    "application/json; charset=utf-8",
    "text/csv; header=present",
    "",
    "*/*",
    "multipart/form-data; boundary=x",
]
ACCEPTS = [None, "application/json", "text/csv", "*/*", "image/png", "application/json;q=0.5, text/csv", ""]
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

CASES: Counter[str] = Counter()


@pytest.fixture(scope="module")
def server(start_server: ServerFactory) -> ServerProcess:
    return start_server({"GENESIG_MAX_ROWS": "2000"})


@pytest.fixture(scope="module")
def model(server: ServerProcess, model_dirs: Callable[..., Path]) -> Iterator[tuple[str, str]]:
    """A loaded model and its worker's identity (which must never change: no worker may die)."""
    model_dir = model_dirs("fuzzed", seed=11)
    name = opaque(str(model_dir))
    with ModelServerClient(server.url) as client:
        assert client.load(name, str(model_dir)).status == 200
        yield name, worker_identity(server, name)
        client.unload(name)


@pytest.fixture(scope="module", autouse=True)
def report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    yield
    path = tmp_path_factory.getbasetemp() / "hardening-inputs.json"
    path.write_text(json.dumps(dict(CASES), indent=2, sort_keys=True) + "\n")


def worker_identity(server: ServerProcess, name: str) -> str:
    """The pool's workers by process id: a worker that died is replaced by a new process."""
    assert server.process is not None
    _, workers = pool_processes(server.process.pid)
    assert workers, "no pool workers"
    return ",".join(map(str, workers))


def send(
    server: ServerProcess, name: str, body: bytes, content_type: str | None, accept: str | None = None
) -> Response:
    headers = {}
    if content_type is not None:
        headers["Content-Type"] = content_type
    if accept is not None:
        headers["Accept"] = accept
    with ModelServerClient(server.url, timeout=30) as client:
        return client.request("POST", f"/models/{name}/invoke", body, headers)


def check(server: ServerProcess, model: tuple[str, str], response: Response, family: str) -> None:
    """The contract for any request, followed by a normal request on the same model."""
    name, worker = model
    CASES[f"{family}: {response.status}"] += 1
    CASES["total"] += 1
    assert response.status < 500, (response.status, response.body[:300])
    if response.status == 200:
        if response.content_type.startswith("application/json"):
            predictions = response.json()["predictions"]
            assert all(math.isfinite(p["probability"]) for p in predictions)
        else:
            assert response.content_type.startswith("text/csv") and response.body
    else:
        assert 400 <= response.status < 500
        assert response.content_type.startswith("application/json"), response.body[:300]
        doc = response.json()
        assert doc["error"] and doc["message"], doc
        text = response.body.decode()
        assert "Traceback" not in text and "Exception" not in text
    after = send(server, name, NORMAL, "application/json")
    assert after.status == 200, after.body[:300]
    assert worker_identity(server, name) == worker, "the model's worker was replaced: it died"


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=12), children, max_size=6),
    max_leaves=60,
)
gene_names = st.one_of(st.sampled_from(GENES), st.sampled_from(GENES), st.text(min_size=0, max_size=12))
good_number = st.floats(min_value=0, max_value=1e6).map(repr)
cell = st.one_of(
    good_number,
    good_number,
    good_number,
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.sampled_from(["", "NaN", "inf", "-inf", "true", "null", "1e999", "0x10", "1_000", " 3 ", "—", "\x00", '"1"']),
    st.text(max_size=8),
)
# Headers that are usually right (the model's genes in any order, maybe extra or repeated columns) or anything.
header_names = st.one_of(
    st.tuples(st.permutations(GENES), st.lists(gene_names, max_size=2)).map(lambda t: [*t[0], *t[1]]),
    st.lists(gene_names, min_size=0, max_size=6),
)


@SETTINGS
@given(value=json_values, shape=st.sampled_from(["raw", "inputs", "instances", "split", "list"]))
def test_arbitrary_json_documents(server: ServerProcess, model: tuple[str, str], value: Any, shape: str) -> None:
    doc = {
        "raw": value,
        "inputs": {"inputs": value},
        "instances": {"instances": value},
        "split": {"columns": GENES, "data": value},
        "list": [value],
    }[shape]
    body = json.dumps(doc, allow_nan=True).encode()  # NaN/Infinity literals are invalid JSON: also worth sending
    check(server, model, send(server, model[0], body, "application/json"), f"json/{shape}")


@SETTINGS
@given(rows=st.lists(st.lists(json_scalars, min_size=0, max_size=5), min_size=0, max_size=4))
def test_gene_values_of_every_type(server: ServerProcess, model: tuple[str, str], rows: list[list[Any]]) -> None:
    body = json.dumps({"inputs": rows}, allow_nan=True).encode()
    check(server, model, send(server, model[0], body, "application/json"), "json/values")


@SETTINGS
@given(names=header_names, values=st.lists(cell, min_size=0, max_size=6))
def test_records_with_odd_and_repeated_gene_names(
    server: ServerProcess, model: tuple[str, str], names: list[str], values: list[str]
) -> None:
    # Written by hand so that a gene can appear twice in one object, which json.dumps cannot produce.
    pairs = zip(names, values, strict=False)  # the shorter list decides: missing and extra genes both happen
    members = [f"{json.dumps(n)}: {v if _is_json_number(v) else json.dumps(v)}" for n, v in pairs]
    body = ("[{" + ", ".join(members) + "}]").encode()
    check(server, model, send(server, model[0], body, "application/json"), "json/records")


@SETTINGS
@given(
    header=header_names,
    rows=st.lists(st.lists(cell, min_size=3, max_size=5), min_size=0, max_size=5),
    separator=st.sampled_from([",", ";", "\t"]),
    newline=st.sampled_from(["\n", "\r\n", "\r"]),
)
def test_csv_with_odd_headers_cells_and_separators(
    server: ServerProcess,
    model: tuple[str, str],
    header: list[str],
    rows: list[list[str]],
    separator: str,
    newline: str,
) -> None:
    text = newline.join(separator.join(line) for line in [header, *rows])
    check(server, model, send(server, model[0], text.encode("utf-8", "surrogatepass"), "text/csv"), "csv")


@SETTINGS
@given(
    order=st.permutations(GENES),
    rows=st.lists(st.lists(st.floats(min_value=0, max_value=1e6), min_size=3, max_size=3), min_size=1, max_size=40),
    newline=st.sampled_from(["\n", "\r\n"]),
    accept=st.sampled_from(["application/json", "text/csv"]),
)
def test_valid_csv_in_any_gene_order_is_answered_row_for_row(
    server: ServerProcess, model: tuple[str, str], order: list[str], rows: list[list[float]], newline: str, accept: str
) -> None:
    text = newline.join([",".join(order), *(",".join(repr(v) for v in row) for row in rows)])
    response = send(server, model[0], text.encode(), "text/csv", accept)
    assert response.status == 200, response.body[:300]
    if accept == "application/json":
        assert len(response.json()["predictions"]) == len(rows)
    else:
        assert len(response.body.decode().strip().splitlines()) == len(rows) + 1  # header + one line per row
    check(server, model, response, "csv/valid")


@SETTINGS
@given(data=st.data())
def test_truncated_valid_bodies(server: ServerProcess, model: tuple[str, str], data: st.DataObject) -> None:
    valid = [
        (b'{"inputs": [[1.5, 0, 3], [2, 2, 2]]}', "application/json"),
        (b'[{"LRIG1": 1, "HPGD": 2, "GDF15": 3}]', "application/json"),
        (b'{"columns": ["LRIG1", "HPGD", "GDF15"], "data": [[1, 2, 3]]}', "application/json"),
        (b"LRIG1,HPGD,GDF15\n1,2,3\n4,5,6\n", "text/csv"),
    ]
    body, content_type = data.draw(st.sampled_from(valid))
    cut = data.draw(st.integers(min_value=0, max_value=len(body)))
    check(server, model, send(server, model[0], body[:cut], content_type), "truncated")


@SETTINGS
@given(
    body=st.one_of(st.binary(max_size=300), st.sampled_from([NORMAL, b"LRIG1,HPGD,GDF15\n1,2,3\n", b""])),
    content_type=st.one_of(st.none(), st.sampled_from(CONTENT_TYPES), st.text(max_size=40)),
    accept=st.one_of(st.sampled_from(ACCEPTS), st.text(max_size=30)),
)
def test_any_bytes_with_any_content_type_and_accept(
    server: ServerProcess, model: tuple[str, str], body: bytes, content_type: str | None, accept: str | None
) -> None:
    # Header values must be latin-1 for HTTP; anything else is a client-side error before the server sees it.
    content_type = _latin1(content_type)
    accept = _latin1(accept)
    check(server, model, send(server, model[0], body, content_type, accept), "bytes+headers")


@pytest.fixture(scope="module")
def endpoint(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    """The local endpoint (SageMaker's routing) in front of the same server, and a TargetModel it serves."""
    workdir = tmp_path_factory.mktemp("endpoint")
    archive = write_synthetic_artifact(workdir / "prefix", "routed", GENES, seed=12)
    proc, url = start_local_endpoint(workdir / "prefix", server.url, workdir)
    try:
        yield runtime_client(url), archive.name
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert "Traceback" not in next(workdir.glob("local-endpoint-*.log")).read_text()


def invoke_endpoint(client: Any, target: str, body: bytes, content_type: str | None, accept: str | None) -> int:
    """One InvokeEndpoint through boto3, checked against SageMaker's contract; returns the status seen."""
    kwargs = {"EndpointName": "local", "TargetModel": target, "Body": body}
    kwargs |= {"ContentType": content_type} if content_type else {}
    kwargs |= {"Accept": accept} if accept else {}
    try:
        response = client.invoke_endpoint(**kwargs)
    except client.exceptions.ModelError as exc:
        # The container's 4xx arrives as SageMaker's ModelError (424) with the original status and JSON body.
        original = exc.response["OriginalStatusCode"]
        assert 400 <= original < 500, exc.response
        doc = json.loads(exc.response["OriginalMessage"])
        assert doc["error"] and doc["message"] and "Traceback" not in doc["message"], doc
        return int(original)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    payload = response["Body"].read()
    assert payload and response["ContentType"].split(";")[0] in ("application/json", "text/csv"), payload[:200]
    return 200


@SETTINGS
@given(
    body=st.one_of(
        st.binary(max_size=300),
        json_values.map(lambda v: json.dumps({"inputs": v}).encode()),
        st.sampled_from([NORMAL, b"LRIG1,HPGD,GDF15\n1,2,3\n", b""]),
    ),
    content_type=st.one_of(st.none(), st.sampled_from(CONTENT_TYPES)),
    accept=st.sampled_from(ACCEPTS),
)
def test_any_body_through_the_local_endpoint(
    endpoint: tuple[Any, str], body: bytes, content_type: str | None, accept: str | None
) -> None:
    client, target = endpoint
    status = invoke_endpoint(client, target, body, content_type, accept)
    CASES[f"through the endpoint: {status}"] += 1
    CASES["total"] += 1
    assert invoke_endpoint(client, target, NORMAL, "application/json", None) == 200


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deep_nesting(server: ServerProcess, model: tuple[str, str], depth: int) -> None:
    body = b'{"inputs": ' + b"[" * depth + b"]" * depth + b"}"
    check(server, model, send(server, model[0], body, "application/json"), "deep nesting")


@pytest.mark.parametrize(
    ("rows", "expected"),
    [(0, 400), (1, 200), (2000, 200), (2001, 413)],
)
def test_row_counts_around_the_limit(server: ServerProcess, model: tuple[str, str], rows: int, expected: int) -> None:
    body = json.dumps({"inputs": [[1.0, 2.0, 3.0]] * rows}).encode()
    response = send(server, model[0], body, "application/json")
    assert response.status == expected, response.body[:300]
    check(server, model, response, "rows")


LIMIT = ServingSettings().max_request_bytes


@pytest.mark.parametrize(("size", "expected"), [(LIMIT, {200, 400}), (LIMIT + 1, {413}), (LIMIT + 1_000_000, {413})])
def test_bodies_around_the_size_limit(
    server: ServerProcess, model: tuple[str, str], size: int, expected: set[int]
) -> None:
    # At the limit the body reaches the handler (which answers or refuses it); over it, 413 before it is read.
    prefix = b'{"inputs": [[1, 2, 3]], "pad": "'
    body = prefix + b"x" * (size - len(prefix) - 2) + b'"}'
    assert len(body) == size
    response = send(server, model[0], body, "application/json")
    assert response.status in expected, response.body[:300]
    check(server, model, response, "size")


def _is_json_number(text: str) -> bool:
    try:
        value = json.loads(text)
    except ValueError:
        return False
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _latin1(value: str | None) -> str | None:
    if value is None:
        return None
    cleaned = "".join(ch for ch in value if ch.isprintable() and ord(ch) < 256)
    return cleaned.strip()
