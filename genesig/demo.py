"""``genesig demo``: the whole flow on one machine, with no AWS account.

Generate a cohort (or use ``--data``), run the local pipeline for the built-in signatures with
approval, start the model server and the local MME endpoint, invoke every deployed signature
through SageMaker Runtime's API (boto3 ``invoke_endpoint`` with ``TargetModel``) with held-out
patients, show what a request with missing genes gets, and stop every process it started.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from genesig.client import ModelServerClient
from genesig.container_server import CONTAINER_MODELS_DIR, ContainerServer
from genesig.local_endpoint import runtime_client, start_local_endpoint
from genesig.pipeline.run import RunOptions, run_local
from genesig.pipeline.settings import TrainSettings
from genesig.pipeline.signatures import default_signatures
from genesig.pipeline.synthetic import SyntheticSpec, write_synthetic_cohort
from genesig.server_process import ServerProcess

logger = logging.getLogger(__name__)
DEMO_PLANTED = {"metagene_19": 2.0, "metagene_10": 1.5}
# Genes outside the signatures, as a real cohort has: the random gene sets the competitive test compares each
# signature with (reported beside the verdict) are drawn from all the cohort's genes.
DEMO_BACKGROUND = 500


@dataclass
class DemoResult:
    summary: Any
    predictions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    bad_request: dict[str, Any] = field(default_factory=dict)
    endpoint_metrics: dict[str, Any] = field(default_factory=dict)
    patients: dict[str, str] = field(default_factory=dict)  # the example input file and the model it is for


def _sample_rows(workdir: Path, name: str, n: int) -> bytes:
    """Held-out patients of this signature, raw values as a client would send them."""
    test = pd.read_csv(workdir / "signatures" / name / "prepared" / "test.csv", dtype=str)
    prepared = json.loads((workdir / "signatures" / name / "prepared" / "prepared.json").read_text())
    return test[[prepared["id_column"], *prepared["genes"]]].head(n).to_csv(index=False).encode()


def _without_genes(rows: bytes, count: int) -> tuple[bytes, list[str]]:
    """The same patients with the last ``count`` gene columns left out (at least one gene stays when there are two
    or more), and the genes left out."""
    frame = pd.read_csv(io.BytesIO(rows), dtype=str)
    genes = list(frame.columns[1:])
    dropped = genes[-min(count, max(1, len(genes) - 1)) :]
    return frame.drop(columns=dropped).to_csv(index=False).encode(), dropped


def invoke_deployed(url: str, workdir: Path, summary: Any, patients: int = 3) -> DemoResult:
    """Invoke every deployed signature with held-out patients, and the first one once more without two of its genes.
    The first signature's patients are written to ``workdir/patients.csv`` for the commands the demo suggests."""
    runtime = runtime_client(url)
    result = DemoResult(summary=summary)
    deployed = [r for r in summary.results if r.deployed]
    for row in deployed:
        rows = _sample_rows(workdir, row.artifact_name, patients)
        response = runtime.invoke_endpoint(
            EndpointName="demo", TargetModel=row.deployed, ContentType="text/csv", Accept="application/json", Body=rows
        )
        result.predictions[row.deployed] = json.loads(response["Body"].read())["predictions"]
    if deployed:
        first = deployed[0]
        rows = _sample_rows(workdir, first.artifact_name, patients)
        (workdir / "patients.csv").write_bytes(rows)
        result.patients = {"target": first.deployed, "path": str(workdir / "patients.csv")}
        body, dropped = _without_genes(rows, 2)
        try:
            runtime.invoke_endpoint(EndpointName="demo", TargetModel=first.deployed, ContentType="text/csv", Body=body)
        except runtime.exceptions.ModelError as exc:
            result.bad_request = {
                "target": first.deployed,
                "dropped": dropped,
                "status": exc.response.get("OriginalStatusCode"),
                "message": json.loads(exc.response.get("OriginalMessage", "{}")).get("message"),
            }
    with ModelServerClient(url) as client:
        result.endpoint_metrics = client.request("GET", "/metrics").json()
    return result


def run_demo(
    workdir: Path,
    data: Path | None = None,
    *,
    patients: int = 200,
    seed: int = 0,
    keep_running: bool = False,
    on_summary: Any = None,
    on_result: Any = None,
    image: str | None = None,
) -> DemoResult:

    workdir.mkdir(parents=True, exist_ok=True)
    if data is None:
        data = write_synthetic_cohort(
            workdir / "cohort.csv",
            default_signatures(),
            SyntheticSpec(n_patients=patients, seed=seed, planted=DEMO_PLANTED, background_genes=DEMO_BACKGROUND),
        )
        logger.info("generated %s: %d patients, effects planted in %s", data, patients, ", ".join(DEMO_PLANTED))
    summary = run_local(RunOptions(data=data, workdir=workdir, approve=True, train=TrainSettings(seed=seed)))
    if on_summary:
        on_summary(summary)
    prefix = workdir / "mme-prefix"
    prefix.mkdir(exist_ok=True)
    cache = workdir / "model-cache"
    shutil.rmtree(cache, ignore_errors=True)  # a previous demo's extracted models
    server: ServerProcess | ContainerServer
    if image:
        # The serving image under Docker, the model cache mounted where SageMaker mounts it.
        server = ContainerServer(image, cache, log_path=workdir / "model-server" / "container.log").start()
        url_root: str | None = CONTAINER_MODELS_DIR
    else:
        server = ServerProcess(workdir / "model-server").start()
        url_root = None
    endpoint, url = None, ""
    try:
        endpoint, url = start_local_endpoint(prefix, server.url, workdir, cache_dir=cache, model_url_root=url_root)
        result = invoke_deployed(url, workdir, summary)
        if on_result:
            on_result(result)
        if keep_running:
            _wait_for_interrupt(url, server.url, result)
        return result
    finally:
        if endpoint is not None:
            endpoint.send_signal(signal.SIGTERM)
            endpoint.wait(timeout=30)
        leftovers = server.stop()
        if leftovers:
            logger.warning("processes left behind and killed: %s", leftovers)


def _wait_for_interrupt(url: str, server_url: str, result: DemoResult) -> None:
    target = result.patients.get("target", "<name>-v1.tar.gz")
    patients = result.patients.get("path", "patients.csv")
    logger.info(
        "the endpoint stays up until Ctrl-C. Try:\n"
        "  genesig predict --target-model %s --input %s --endpoint demo --url %s\n"
        "  curl -s %s/endpoints/demo/invocations -H 'X-Amzn-SageMaker-Target-Model: %s' "
        "-H 'Content-Type: text/csv' --data-binary @%s\n"
        "  curl -s %s/metrics     # endpoint metrics;  %s/models  # the model server",
        target,
        patients,
        url,
        url,
        target,
        patients,
        url,
        server_url,
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
