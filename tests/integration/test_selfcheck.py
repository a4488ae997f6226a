"""`genesig selfcheck` end to end, and the same contract when the Python gateway owns the public port."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from genesig.client import ModelServerClient
from genesig.selfcheck import run_checks

from .conftest import ServerFactory


def test_selfcheck_command_starts_checks_and_stops_a_server() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "genesig.cli", "selfcheck"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"self-check: \d+ passed, 0 failed", result.stderr)


def test_gateway_front_serves_the_same_contract(start_server: ServerFactory, tmp_path: Path) -> None:
    server = start_server({"GENESIG_FRONT": "gateway"})
    with ModelServerClient(server.url) as client:
        checks = run_checks(client, tmp_path)
    failed = [f"{c.name}: {c.detail}" for c in checks if not c.passed]
    assert failed == []


def test_selfcheck_names_an_unreachable_server() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "genesig.cli", "selfcheck", "--url", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "no healthy model server answers at http://127.0.0.1:9" in result.stderr
    assert "Traceback" not in result.stderr


def test_selfcheck_loads_by_the_path_the_server_sees(start_server: ServerFactory, tmp_path: Path) -> None:
    """--models-dir / --container-models-dir: the artifacts are written into the host folder and loaded by the
    server's own path for it (here a second path to the same folder, as a container's mount is)."""
    server = start_server()
    host = tmp_path / "host-models"
    host.mkdir()
    seen_as = tmp_path / "server-view"
    seen_as.symlink_to(host)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "genesig.cli",
            "selfcheck",
            "--url",
            server.url,
            "--models-dir",
            str(host),
            "--container-models-dir",
            str(seen_as),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"self-check: \d+ passed, 0 failed", result.stderr)
    log = server.log_path.read_text()
    assert f'"url": "{seen_as}/genesig-selfcheck-' in log or str(seen_as) in log, "loaded by the server's path"
    assert list(host.iterdir()) == [], "the self-check removes what it wrote"


def test_selfcheck_refuses_a_models_dir_without_a_url(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "genesig.cli", "selfcheck", "--models-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .endswith("--models-dir goes with --url: the folder mounted into the server you check")
    )
