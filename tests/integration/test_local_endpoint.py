"""The local MME endpoint in front of the real model server, called through boto3 exactly as production is."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from genesig.artifact import extract_artifact
from genesig.artifact.synthetic import write_synthetic_artifact
from genesig.client import ModelServerClient
from genesig.local_endpoint import opaque_name, runtime_client, start_local_endpoint
from genesig.server_process import ServerProcess, free_port

from .conftest import BIG_GENES, BIG_HIDDEN, ServerFactory, big_cost, big_csv, budget_for

GENES = ["LRIG1", "HPGD", "GDF15"]
CSV = b"Case_ID,LRIG1,HPGD,GDF15\nP1,3.2,0,11.5\n"
BIG_CSV = big_csv()


@pytest.fixture(scope="module")
def prefix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("prefix")
    for i in range(4):
        write_synthetic_artifact(folder, f"sig{i}", GENES, seed=i)
    (folder / "corrupt-v1.tar.gz").write_bytes(b"not a tarball at all")
    return folder


@pytest.fixture
def endpoint(start_server: ServerFactory, prefix: Path, tmp_path: Path) -> Iterator[tuple[str, ServerProcess]]:
    server = start_server()
    proc, url = start_local_endpoint(prefix, server.url, tmp_path)
    yield url, server
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


def invoke(client: Any, target: str, body: bytes = CSV) -> dict[str, Any]:
    response = client.invoke_endpoint(
        EndpointName="local", TargetModel=target, ContentType="text/csv", Accept="application/json", Body=body
    )
    return dict(response, Body=response["Body"].read())


def test_target_models_load_on_first_use_under_opaque_names(endpoint: tuple[str, ServerProcess]) -> None:
    url, server = endpoint
    client = runtime_client(url)
    first = invoke(client, "/sig0-v1.tar.gz")  # a leading slash, as the AWS sample sends it
    assert b'"model":"sig0"' in first["Body"]
    second = invoke(client, "sig0-v1.tar.gz")
    cache = [r["ResponseMetadata"]["HTTPHeaders"]["x-genesig-model-cache"] for r in (first, second)]
    assert cache == ["miss", "hit"], "a request that waited for a load says so"
    names = [m["modelName"] for m in ModelServerClient(server.url).list().json()["models"]]
    assert names and all(len(n) == 32 and "sig0" not in n for n in names), "loaded under a hash, like SageMaker"
    metrics = ModelServerClient(url).request("GET", "/metrics").json()
    assert metrics["ModelCacheMiss"] == 1 and metrics["ModelCacheHit"] == 1 and metrics["LoadedModelCount"] == 1
    assert metrics["ModelLoads"] == 1 and metrics["ModelEvictions"] == 0


def test_model_errors_arrive_as_sagemaker_model_error(endpoint: tuple[str, ServerProcess]) -> None:
    client = runtime_client(endpoint[0])
    with pytest.raises(client.exceptions.ModelError) as info:
        invoke(client, "sig1-v1.tar.gz", b"LRIG1\n1\n")
    error = info.value.response
    assert error["OriginalStatusCode"] == 400 and "HPGD, GDF15" in error["OriginalMessage"]


def test_statuses_pass_through_as_sagemaker_answers_them(endpoint: tuple[str, ServerProcess]) -> None:
    """Over 6 MB SageMaker itself answers 413; under it the container's own 4xx (here its 413 for too many rows)
    arrives as a ModelError carrying it. The endpoint keeps serving."""
    from botocore.exceptions import ClientError

    client = runtime_client(endpoint[0])
    with pytest.raises(ClientError) as info:
        invoke(client, "sig1-v1.tar.gz", b"LRIG1,HPGD,GDF15\n" + b"1,2,3\n" * 1_400_000)  # 8.4 MB
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert "content length exceeded 6291456 bytes" in str(info.value)
    with pytest.raises(client.exceptions.ModelError) as model_error:
        invoke(client, "sig1-v1.tar.gz", b"LRIG1,HPGD,GDF15\n" + b"1,2,3\n" * 20_000)  # more rows than allowed
    assert model_error.value.response["OriginalStatusCode"] == 413
    assert invoke(client, "sig1-v1.tar.gz")["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_unknown_and_corrupt_targets_are_clear_and_leave_nothing_loaded(endpoint: tuple[str, ServerProcess]) -> None:
    url, server = endpoint
    client = runtime_client(url)
    with pytest.raises(client.exceptions.ValidationError, match="nope-v1.tar.gz is not in the model prefix"):
        invoke(client, "nope-v1.tar.gz")
    with pytest.raises(client.exceptions.ValidationError, match="not a valid model artifact"):
        invoke(client, "corrupt-v1.tar.gz")
    with pytest.raises(client.exceptions.ValidationError, match="invalid TargetModel"):
        invoke(client, "../escape.tar.gz")
    assert ModelServerClient(server.url).list().json()["models"] == []
    assert invoke(client, "sig2-v1.tar.gz")["ResponseMetadata"]["HTTPStatusCode"] == 200


@pytest.fixture(scope="module")
def big_prefix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four big models (genome-wide MLPs): memory pressure with a budget that holds two."""
    folder = tmp_path_factory.mktemp("big-prefix")
    for i in range(4):
        write_synthetic_artifact(folder, f"big{i}", BIG_GENES, hidden_units=BIG_HIDDEN, seed=i)
    return folder


def pressed_server(start_server: ServerFactory, big_prefix: Path, idle_pss_bytes: int, tmp_path: Path) -> ServerProcess:
    """A real server whose memory budget holds at most three of the four big models (fewer as the processes' heaps
    grow): loads beyond that get 507 from admission."""
    model_dir = extract_artifact(big_prefix / "big0-v1.tar.gz", tmp_path / "sizing")
    return start_server(budget_for(idle_pss_bytes, 3.5, big_cost(model_dir)))


def test_memory_pressure_evicts_lru_models_and_no_request_fails(
    start_server: ServerFactory, big_prefix: Path, idle_pss_bytes: int, tmp_path: Path
) -> None:
    server = pressed_server(start_server, big_prefix, idle_pss_bytes, tmp_path)
    # A zero-byte disk limit: only loaded models (and the one being loaded) keep their extracted files.
    proc, url = start_local_endpoint(big_prefix, server.url, tmp_path, cache_max_mb=0)
    try:
        client = runtime_client(url)
        for round_no in range(3):
            for i in range(4):
                response = invoke(client, f"big{i}-v1.tar.gz", BIG_CSV)
                assert response["ResponseMetadata"]["HTTPStatusCode"] == 200, round_no
        metrics = ModelServerClient(url).request("GET", "/metrics").json()
        evictions = sum(m["evictions"] for m in metrics["models"].values())
        assert evictions > 0 and metrics["LoadedModelCount"] <= 3 and metrics["ModelEvictions"] == evictions
        assert metrics["ModelLoads"] == metrics["LoadedModelCount"] + evictions
        cache = next(tmp_path.glob("cache-*"))
        extracted = [p for p in cache.iterdir() if p.is_dir() and (p / "model").is_dir()]
        assert len(extracted) <= metrics["LoadedModelCount"] + 1, "evicted models' files are deleted"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_concurrent_clients_under_memory_pressure_never_fail(
    start_server: ServerFactory, big_prefix: Path, idle_pss_bytes: int, tmp_path: Path
) -> None:
    # Several loads that get 507 at the same time must each evict a different model, and a model that is
    # answering a request is never the victim (this failed with KeyError/500 before victims were claimed).
    server = pressed_server(start_server, big_prefix, idle_pss_bytes, tmp_path)
    proc, url = start_local_endpoint(big_prefix, server.url, tmp_path)
    try:
        errors: list[str] = []

        def client_run(worker: int) -> list[int]:
            client = runtime_client(url)
            statuses = []
            for i in range(6):
                try:
                    response = invoke(client, f"big{(worker + i) % 4}-v1.tar.gz", BIG_CSV)
                    statuses.append(response["ResponseMetadata"]["HTTPStatusCode"])
                except client.exceptions.ClientError as exc:
                    statuses.append(exc.response["ResponseMetadata"]["HTTPStatusCode"])
                    errors.append(str(exc))
            return statuses

        with ThreadPoolExecutor(6) as pool:
            statuses = [s for per_client in pool.map(client_run, range(6)) for s in per_client]
        metrics = ModelServerClient(url).request("GET", "/metrics").json()
        assert statuses == [200] * 36, errors
        assert metrics["ModelEvictions"] > 0 and metrics["LoadedModelCount"] <= 3
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert "Traceback" not in next(tmp_path.glob("local-endpoint-*.log")).read_text()


def test_a_full_cache_disk_is_a_clear_507_and_other_models_keep_serving(
    start_server: ServerFactory, prefix: Path, tmp_path: Path
) -> None:
    import resource

    from botocore.exceptions import ClientError

    # The cache's disk is "full" for files over 32 KB (RLIMIT_FSIZE: writes fail with EFBIG, as ENOSPC would):
    # the small test models fit, a 3,000-gene model's manifest does not.
    big_prefix = tmp_path / "prefix"
    shutil.copytree(prefix, big_prefix)
    write_synthetic_artifact(big_prefix, "big", [f"G{i}" for i in range(3000)], seed=1)
    server = start_server()
    port = free_port()
    limit = 32 * 1024

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.Popen(
        [sys.executable, "-m", "genesig.cli", "local-endpoint", "--prefix", str(big_prefix), "--port", str(port)]
        + ["--model-server-url", server.url, "--cache-dir", str(tmp_path / "cache")],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "endpoint.log", "wb"),  # noqa: SIM115 - closed with the process
        preexec_fn=limit_file_size,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        with ModelServerClient(url, timeout=5) as ping:
            deadline = time.monotonic() + 60
            while not ping.ping():
                assert proc.poll() is None and time.monotonic() < deadline, "endpoint did not start"
                time.sleep(0.2)
        client = runtime_client(url)
        assert invoke(client, "sig0-v1.tar.gz")["ResponseMetadata"]["HTTPStatusCode"] == 200
        for _ in range(2):  # every attempt gets the same clear answer; nothing wedges
            with pytest.raises(ClientError) as info:
                client.invoke_endpoint(
                    EndpointName="local", TargetModel="big-v1.tar.gz", ContentType="application/json", Body=b"{}"
                )
            error = info.value.response
            assert error["ResponseMetadata"]["HTTPStatusCode"] == 507
            assert "no disk space for TargetModel big-v1.tar.gz" in error["Error"]["Message"]
        assert invoke(client, "sig0-v1.tar.gz")["ResponseMetadata"]["HTTPStatusCode"] == 200, "loaded model unaffected"
        assert invoke(client, "sig1-v1.tar.gz")["ResponseMetadata"]["HTTPStatusCode"] == 200, "small models still load"
        cached = sorted(p.name for p in (tmp_path / "cache").iterdir())
        assert cached == sorted(opaque_name(t) for t in ("sig0-v1.tar.gz", "sig1-v1.tar.gz")), "nothing half-written"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert "Traceback" not in (tmp_path / "endpoint.log").read_text()


def test_stopping_an_endpoint_that_started_its_model_server_stops_every_process(prefix: Path, tmp_path: Path) -> None:
    import psutil

    port = free_port()
    # Its own temporary directory, to see what it leaves there (short: the model server's sockets live under it).
    temp = Path(tempfile.mkdtemp(prefix="ep-", dir="/tmp"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "genesig.cli", "local-endpoint", "--prefix", str(prefix), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TMPDIR": str(temp)},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        with ModelServerClient(url, timeout=5) as client:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not client.ping():
                assert proc.poll() is None
                time.sleep(0.3)
        assert invoke(runtime_client(url), "sig0-v1.tar.gz")["ResponseMetadata"]["HTTPStatusCode"] == 200
        tree = psutil.Process(proc.pid).children(recursive=True)
        assert any(p.name() == "java" for p in tree)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    _, alive = psutil.wait_procs(tree, timeout=10)
    assert alive == [], [p.pid for p in alive]
    assert list(temp.iterdir()) == [], "its model cache and server state are removed when it stops"
    temp.rmdir()
