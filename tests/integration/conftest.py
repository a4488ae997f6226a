"""Real servers on 127.0.0.1, started with the image's own entry command, stopped by process id."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from genesig.artifact import extract_artifact
from genesig.artifact.synthetic import write_synthetic_artifact
from genesig.container.server import pick_internal_port
from genesig.server_process import ServerProcess

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
GENES = ["LRIG1", "HPGD", "GDF15"]


def image_command() -> list[str]:
    """ENTRYPOINT + CMD of the Dockerfile's final stage, with the executable taken from this venv."""
    entry: list[str] = []
    cmd: list[str] = []
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if line.startswith("FROM "):
            entry, cmd = [], []
        elif line.startswith("ENTRYPOINT "):
            entry = json.loads(line.removeprefix("ENTRYPOINT "))
        elif line.startswith("CMD "):
            cmd = json.loads(line.removeprefix("CMD "))
    argv = entry + cmd
    assert argv, "Dockerfile has no exec-form ENTRYPOINT/CMD"
    return [str(Path(sys.executable).parent / argv[0])] + argv[1:]


def opaque(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:24]


ServerFactory = Callable[..., ServerProcess]


@pytest.fixture(scope="module")
def start_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    started: list[ServerProcess] = []

    def start(env: dict[str, str] | None = None) -> ServerProcess:
        state = tmp_path_factory.mktemp("state")
        full_env = {"GENESIG_MODEL_SERVER_PORT": str(pick_internal_port(None)), **(env or {})}
        server = ServerProcess(state, env=full_env, command=image_command()).start()
        started.append(server)
        return server

    yield start
    for server in started:
        leftovers = server.stop()
        assert not leftovers, f"processes left behind: {leftovers}; see {server.log_path}"


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    root = tmp_path_factory.mktemp("models")

    def make(name: str, **kwargs: object) -> Path:
        archive = write_synthetic_artifact(root / "prefix", name, kwargs.pop("genes", GENES), **kwargs)  # type: ignore[arg-type]
        return extract_artifact(archive, root / "cache" / opaque(archive.name) / "model")

    return make


# Memory pressure needs models whose cost dwarfs the noise in a server's measured memory (a few MB): genome-wide
# MLPs, ~30 MB each across a two-worker pool.
BIG_GENES = [f"GENE{i:05d}" for i in range(20_000)]
BIG_HIDDEN = 64


def big_csv(rows: int = 1) -> bytes:
    header = ",".join(["Case_ID", *BIG_GENES])
    lines = [header] + [",".join([f"P{r}", *("1.5" for _ in BIG_GENES)]) for r in range(rows)]
    return ("\n".join(lines) + "\n").encode()


def big_cost(model_dir: Path) -> int:
    """What the server charges for the model: the admission rule with this machine's pool size."""
    from genesig.artifact import read_manifest
    from genesig.artifact.package import weights_mappable
    from genesig.container.admission import signature_cost
    from genesig.container.server import pool_workers
    from genesig.container.settings import read_settings

    manifest = read_manifest(model_dir)
    return signature_cost(manifest, pool_workers(read_settings({})), mapped=weights_mappable(model_dir))


@pytest.fixture(scope="module")
def idle_pss_bytes(start_server: ServerFactory) -> int:
    """What an idle server takes on this machine (JVM, gateway, nginx, the pool; charged by PSS), from which tests
    set memory budgets that hold a known number of big models."""
    import time

    import psutil

    idle = start_server()
    time.sleep(2)  # let the JVM settle after start-up
    assert idle.process is not None
    processes = [psutil.Process(idle.process.pid), *idle.descendants()]
    pss = sum(p.memory_full_info().pss for p in processes)
    idle.stop()
    return pss


def budget_for(idle_pss_bytes: int, models: float, cost: int) -> dict[str, str]:
    """Server settings whose memory budget holds ``models`` models of ``cost`` bytes above the idle server."""
    mib = 1024 * 1024
    return {
        "GENESIG_MEMORY_LIMIT_MB": str((idle_pss_bytes + int(models * cost)) // mib),
        "GENESIG_MEMORY_RESERVE_MB": "0",
    }
