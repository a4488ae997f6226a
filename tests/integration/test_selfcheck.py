"""`genesig selfcheck` end to end, and the same contract when the Python gateway owns the public port."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from genesig.client import ModelServerClient
from genesig.selfcheck import run_checks

from .conftest import ServerFactory

pytestmark = pytest.mark.integration


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
