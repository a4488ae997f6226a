"""Memory pressure, reported: a real memory budget that holds some models only.

First SageMaker's evict-and-retry loop driven by hand on the raw container API, then clients through the local
endpoint (SageMaker's routing) over twice as many models as fit. Requests sent, statuses seen and recovery times
are recorded as test properties (shown with ``-rA`` or ``--junitxml``).
"""

from __future__ import annotations

import json
import random
import signal
import statistics
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path

import pytest

from genesig.artifact import extract_artifact
from genesig.artifact.synthetic import write_synthetic_artifact
from genesig.client import ModelServerClient
from genesig.local_endpoint import runtime_client, start_local_endpoint

from .conftest import BIG_GENES, BIG_HIDDEN, ServerFactory, big_cost, big_csv, budget_for, opaque

BODY = json.dumps({"inputs": [[1.5] * len(BIG_GENES)]}).encode()
CSV = big_csv()
RECOVERIES = 5
# Room for this many of the big models above what an idle server takes.
FIT = 4.5


def big_model(folder: Path, label: str, seed: int) -> Path:
    archive = write_synthetic_artifact(folder / "prefix", label, BIG_GENES, hidden_units=BIG_HIDDEN, seed=seed)
    return extract_artifact(archive, folder / "cache" / archive.name / "model")


@pytest.fixture(scope="module")
def budget(idle_pss_bytes: int, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A budget for the whole server (JVM, gateway, nginx, the pool; charged by PSS) holding a few big models."""
    return budget_for(idle_pss_bytes, FIT, big_cost(big_model(tmp_path_factory.mktemp("sizing"), "sizing", 0)))


def test_container_api_507_then_unload_lru_then_retry_recovers_every_time(
    start_server: ServerFactory,
    budget: dict[str, str],
    model_dirs: Callable[..., Path],
    record_property: pytest.RecordProperty,
) -> None:
    server = start_server(budget)
    statuses: Counter[str] = Counter()
    recoveries: list[float] = []
    unloads_per_recovery: list[int] = []
    resident: deque[str] = deque()  # least recently loaded first
    capacity = 0
    with ModelServerClient(server.url, timeout=60) as client:
        for i in range(200):
            if len(recoveries) == RECOVERIES:
                break
            model_dir = model_dirs(f"budget{i}", genes=BIG_GENES, hidden_units=BIG_HIDDEN, seed=i)
            name = opaque(str(model_dir))
            refused_at, unloads = 0.0, 0
            while True:
                response = client.load(name, str(model_dir))
                statuses[f"load {response.status}"] += 1
                if response.status == 200:
                    break
                assert response.status == 507 and response.json()["error"] == "insufficient_memory", response.body
                refused_at = refused_at or time.monotonic()
                assert resident, "refused with nothing loaded"
                capacity = capacity or len(resident)
                unloaded = client.unload(resident.popleft())
                statuses[f"unload {unloaded.status}"] += 1
                assert unloaded.status == 200, unloaded.body
                unloads += 1
            if refused_at:
                recoveries.append(time.monotonic() - refused_at)
                unloads_per_recovery.append(unloads)
            resident.append(name)
            for loaded in resident:  # every resident model answers, the new one and the old ones
                answer = client.invoke(loaded, BODY)
                statuses[f"invoke {answer.status}"] += 1
                assert answer.status == 200, answer.body
    assert len(recoveries) == RECOVERIES, f"the budget never ran out: {statuses}"
    assert not [k for k in statuses if k.split()[1].startswith("5") and k != "load 507"], statuses
    record_property("budget_mb", budget["GENESIG_MEMORY_LIMIT_MB"])
    record_property("requests", sum(statuses.values()))
    record_property("statuses", dict(statuses))
    record_property("models_that_fit", capacity)
    record_property("recovery_s", [round(s, 2) for s in recoveries])
    record_property("unloads_per_recovery", unloads_per_recovery)


def test_clients_through_the_local_endpoint_over_twice_the_models_that_fit_all_succeed(
    start_server: ServerFactory, budget: dict[str, str], tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    server = start_server(budget)
    # How many models fit: load until the first 507, then leave the server empty for the endpoint.
    fit = 0
    probe_dirs = tmp_path / "probe"
    with ModelServerClient(server.url, timeout=60) as client:
        names = []
        while True:
            model_dir = big_model(probe_dirs, f"probe{fit}", fit)
            response = client.load(opaque(str(model_dir)), str(model_dir))
            if response.status == 507:
                break
            assert response.status == 200, response.body
            names.append(opaque(str(model_dir)))
            fit += 1
        for name in names:
            assert client.unload(name).status == 200
    prefix = tmp_path / "prefix"
    targets = [
        write_synthetic_artifact(prefix, f"zipf{i}", BIG_GENES, hidden_units=BIG_HIDDEN, seed=i).name
        for i in range(2 * fit)
    ]
    proc, url = start_local_endpoint(prefix, server.url, tmp_path)
    statuses: Counter[str] = Counter()
    cold_s: list[float] = []
    warm_s: list[float] = []
    deadline = time.monotonic() + 15

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        client = runtime_client(url)
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                response = client.invoke_endpoint(
                    EndpointName="local",
                    TargetModel=rng.choice(targets),
                    ContentType="text/csv",
                    Accept="application/json",
                    Body=CSV,
                )
                response["Body"].read()
                meta = response["ResponseMetadata"]
                statuses[str(meta["HTTPStatusCode"])] += 1
                cache = meta["HTTPHeaders"].get("x-genesig-model-cache")
                (cold_s if cache == "miss" else warm_s).append(time.monotonic() - started)
            except client.exceptions.ClientError as exc:
                statuses[str(exc.response["ResponseMetadata"]["HTTPStatusCode"])] += 1

    try:
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        metrics = ModelServerClient(url).request("GET", "/metrics").json()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    record_property("models", len(targets))
    record_property("models_that_fit", fit)
    record_property("requests", sum(statuses.values()))
    record_property("statuses", dict(statuses))
    record_property("loads", metrics["ModelLoads"])
    record_property("evictions", metrics["ModelEvictions"])
    record_property("cold_p50_max_s", [round(statistics.median(cold_s), 2), round(max(cold_s), 2)])
    record_property("warm_p50_ms", round(statistics.median(warm_s) * 1000, 1) if warm_s else None)
    assert fit >= 2, "the budget should hold a few models"
    assert set(statuses) == {"200"}, statuses
    assert metrics["ModelEvictions"] > 0 and metrics["LoadedModelCount"] <= fit
    assert "Traceback" not in next(tmp_path.glob("local-endpoint-*.log")).read_text()
