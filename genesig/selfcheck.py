"""``genesig selfcheck``: prove a model server works the way SageMaker will call it.

Against a running server (``--url``, e.g. the image started with ``docker run``) or
one it starts itself: load seeded artifacts under opaque names as SageMaker does,
describe, invoke in every request format, check that bad input gets a clear 4xx,
unload, and (when it started the server) stop it and check no process is left.

A container sees its model folders under its own path (SageMaker mounts them at
``/opt/ml/models``): with ``models_dir`` (the host folder mounted there) the artifacts
are written on the host and loaded by their path inside the container.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
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
# Where SageMaker mounts the model folders in the container.
CONTAINER_MODELS_DIR = "/opt/ml/models"


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


def _opaque_name(artifact: str) -> str:
    # SageMaker loads each TargetModel under a hash, not its own name.
    return hashlib.sha256(artifact.encode()).hexdigest()[:32]


def run_checks(
    client: ModelServerClient, work_dir: Path, models_dir: Path | None = None, models_url_root: str | None = None
) -> list[Check]:
    """Write artifacts under ``work_dir`` and extract them into ``models_dir`` (default ``work_dir/models``), which the
    server sees as ``models_url_root`` (default: the same path)."""
    models_dir = models_dir or work_dir / "models"
    url_root = models_url_root or str(models_dir)
    run = uuid.uuid4().hex[:8]  # a rerun after an interrupted one never meets its leftovers
    try:
        return _checks(client, work_dir, models_dir, url_root, run)
    finally:
        for folder in models_dir.glob(f"genesig-selfcheck-{run}-*"):
            shutil.rmtree(folder, ignore_errors=True)


def _checks(client: ModelServerClient, work_dir: Path, models_dir: Path, url_root: str, run: str) -> list[Check]:
    checks: list[Check] = []

    def check(name: str, response: Response, expect: int, test: Callable[[Response], bool] = lambda r: True) -> None:
        ok = response.status == expect and test(response)
        checks.append(Check(name, ok, f"{response.status} {response.body[:160].decode(errors='replace')}"))

    models = {}
    targets: tuple[tuple[TargetKind, int], ...] = (("binary", 1), ("time_to_event", 2))
    for target, seed in targets:
        name = f"selfcheck_{target}"
        archive = write_synthetic_artifact(work_dir / "prefix", name, GENES, target=target, seed=seed)
        folder = f"genesig-selfcheck-{run}-{target}"
        extract_artifact(archive, models_dir / folder / "model")
        os.chmod(models_dir / folder, 0o755)  # the server may run as another user (a container's uid 1000)
        models[name] = (_opaque_name(f"{run}/{archive.name}"), f"{url_root.rstrip('/')}/{folder}/model")

    for name, (opaque, model_url) in models.items():
        check(f"load {name}", client.load(opaque, model_url), 200)
    first, (opaque, model_url) = next(iter(models.items()))
    check("load again answers 409", client.load(opaque, model_url), 409)
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


def selfcheck(
    url: str | None = None, models_dir: Path | None = None, models_url_root: str = CONTAINER_MODELS_DIR
) -> list[Check]:
    """Check the server at ``url`` (or one started here). ``models_dir``: the host folder mounted into the server's
    container at ``models_url_root``; without it the server must see this machine's temporary folder."""
    if models_dir is not None and not models_dir.is_dir():
        raise ModelServerError(
            f"--models-dir {models_dir} is not a folder; give the host folder you mount at {models_url_root}"
        )
    with tempfile.TemporaryDirectory(prefix="genesig-selfcheck-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)  # a server running as another user must read the models extracted here
        if url:
            with ModelServerClient(url, timeout=30) as client:
                if not client.ping():
                    raise ModelServerError(f"no healthy model server answers at {url} (GET /ping)")
                if models_dir is None:
                    return run_checks(client, work)
                return run_checks(client, work, models_dir, models_url_root)
        server = ServerProcess(work / "state")
        server.start()
        try:
            with ModelServerClient(server.url) as client:
                checks = run_checks(client, work)
        finally:
            leftovers = server.stop()
        checks.append(Check("stop leaves no process behind", not leftovers, f"left: {leftovers}"))
        return checks
