"""Running the serving image with Docker: the `docker run` SageMaker would issue, and a clear line without an engine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from genesig import container_server
from genesig.container_server import ContainerServer


def test_run_arguments_mount_the_models_read_only_and_serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(container_server, "host_networking", lambda: False)
    server = ContainerServer("genesig-mme:1", tmp_path, memory_mb=700, env={"GENESIG_LOG_LEVEL": "DEBUG"})
    args = server.run_args()
    assert args[-2:] == ["genesig-mme:1", "serve"], "SageMaker runs `docker run IMAGE serve`"
    assert f"{tmp_path.resolve()}:/opt/ml/models:ro" in args
    assert ["--publish", f"127.0.0.1:{server.port}:8080"] == args[args.index("--publish") : args.index("--publish") + 2]
    assert "--memory" in args and "700m" in args and "GENESIG_LOG_LEVEL=DEBUG" in args


def test_without_a_bridge_the_container_binds_our_port_on_loopback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(container_server, "host_networking", lambda: True)
    server = ContainerServer("img", tmp_path)
    args = server.run_args()
    assert "--network" in args and "host" in args
    assert f"SAGEMAKER_BIND_TO_PORT={server.port}" in args and "GENESIG_HOST=127.0.0.1" in args


def test_no_docker_engine_is_one_clear_line(tmp_path: Path) -> None:
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no.sock"}
    result = subprocess.run(
        [sys.executable, "-m", "genesig.cli", "local-endpoint", "--prefix", str(tmp_path), "--image", "x:1"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.endswith(
        "no Docker engine answers (start dockerd, or set DOCKER_HOST to its socket), or run without --image"
    )
