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
from genesig.client import ModelServerClient
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


def mms_client(server: ServerProcess) -> ModelServerClient:
    return ModelServerClient(f"http://127.0.0.1:{server.extra_env['GENESIG_MODEL_SERVER_PORT']}")
