"""``genesig selfcheck``: prove a model server works the way SageMaker will call it.

Against a running server (``--url``, e.g. the image started with ``docker run``) or
one it starts itself: load seeded artifacts under opaque names as SageMaker does,
describe, invoke in every request format, check that bad input gets a clear 4xx,
unload, and (when it started the server) stop it and check no process is left.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from genesig.artifact import extract_artifact
from genesig.artifact.manifest import TargetKind
from genesig.artifact.synthetic import write_synthetic_artifact
from genesig.client import ModelServerClient, Response
from genesig.errors import ModelServerError
from genesig.server_process import ServerProcess

logger = logging.getLogger(__name__)

GENES = ["LRIG1", "HPGD", "GDF15"]


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


def _opaque_name(artifact: str) -> str:
    # SageMaker loads each TargetModel under a hash, not its own name.
    return hashlib.sha256(artifact.encode()).hexdigest()[:32]


def run_checks(client: ModelServerClient, work_dir: Path) -> list[Check]:
    checks: list[Check] = []

    def check(name: str, response: Response, expect: int, test: Callable[[Response], bool] = lambda r: True) -> None:
        ok = response.status == expect and test(response)
        checks.append(Check(name, ok, f"{response.status} {response.body[:160].decode(errors='replace')}"))

    models = {}
    targets: tuple[tuple[TargetKind, int], ...] = (("binary", 1), ("time_to_event", 2))
    for target, seed in targets:
        name = f"selfcheck_{target}"
        archive = write_synthetic_artifact(work_dir / "prefix", name, GENES, target=target, seed=seed)
        models[name] = (_opaque_name(archive.name), extract_artifact(archive, work_dir / "models" / name / "model"))

    for name, (opaque, model_dir) in models.items():
        check(f"load {name}", client.load(opaque, str(model_dir)), 200)
    first, (opaque, model_dir) = next(iter(models.items()))
    check("load again answers 409", client.load(opaque, str(model_dir)), 409)
    check("describe shows the genes", client.describe(opaque), 200, lambda r: r.json()["genesig"]["genes"] == GENES)
    check("list models", client.list(limit=1), 200, lambda r: len(r.json()["models"]) == 1)

    row = {"Case_ID": "P1", "LRIG1": 3.2, "HPGD": 0.0, "GDF15": 11.5}
    check(
        "invoke with positional inputs",
        client.invoke(opaque, json.dumps({"inputs": [[3.2, 0.0, 11.5]]}).encode()),
        200,
        lambda r: 0.0 <= r.json()["predictions"][0]["probability"] <= 1.0,
    )
    check(
        "invoke with records (reordered, id echoed)",
        client.invoke(opaque, json.dumps([dict(reversed(list(row.items())))]).encode()),
        200,
        lambda r: r.json()["predictions"][0]["id"] == "P1",
    )
    check(
        "invoke with CSV, answer in CSV",
        client.invoke(opaque, b"Case_ID,GDF15,HPGD,LRIG1\nP1,11.5,0,3.2\n", "text/csv", "text/csv"),
        200,
        lambda r: r.body.startswith(b"id,probability,risk_group"),
    )
    check(
        "missing genes answer 400 naming them",
        client.invoke(opaque, json.dumps([{"LRIG1": 1.0}]).encode()),
        400,
        lambda r: r.json()["detail"]["missing_genes"] == ["HPGD", "GDF15"],
    )
    check("unsupported content type answers 415", client.invoke(opaque, b"x", "application/xml"), 415)
    check(
        "the server still serves after bad input", client.invoke(opaque, b"LRIG1,HPGD,GDF15\n1,2,3\n", "text/csv"), 200
    )
    for name, (opaque_name, _) in models.items():
        check(f"unload {name}", client.unload(opaque_name), 200)
    check("invoke after unload answers 404", client.invoke(opaque, b'{"inputs": [[1,2,3]]}'), 404)
    return checks


def selfcheck(url: str | None = None) -> list[Check]:
    with tempfile.TemporaryDirectory(prefix="genesig-selfcheck-") as tmp:
        work = Path(tmp)
        if url:
            with ModelServerClient(url, timeout=30) as client:
                if not client.ping():
                    raise ModelServerError(f"no healthy model server answers at {url} (GET /ping)")
                return run_checks(client, work)
        server = ServerProcess(work / "state")
        server.start()
        try:
            with ModelServerClient(server.url) as client:
                checks = run_checks(client, work)
        finally:
            leftovers = server.stop()
        checks.append(Check("stop leaves no process behind", not leftovers, f"left: {leftovers}"))
        return checks
