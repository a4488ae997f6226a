"""`genesig demo` end to end on a fresh folder: pipeline, server, local endpoint, predictions, clean exit."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psutil


def test_demo_runs_the_whole_flow_and_leaves_nothing_running(tmp_path: Path) -> None:
    result = subprocess.run(
        # A relative work folder, as the quick start's default (./genesig-demo) is.
        [sys.executable, "-m", "genesig.cli", "demo", "--workdir", "demo", "--patients", "150"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "COLUMNS": "200"},
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "metagene_19-v1.tar.gz" in out, "a planted signature passed, was deployed and invoked"
    # The request without two genes names the two genes it left out, whatever the model's genes are.
    bad = re.search(r"without 2 of its genes \(([^)]*)\) got 400: missing 2 of the model's \d+ genes: ([^\n]*)", out)
    assert bad is not None and bad.group(1) == bad.group(2), out
    assert "cold loads" in out and "report.png" in out
    assert sorted(p.name for p in (tmp_path / "demo" / "mme-prefix").iterdir())
    # Everything the demo starts (server, JVM, backends, nginx, endpoint) names a path under its work folder.
    leftovers = [p for p in psutil.process_iter(["cmdline"]) if str(tmp_path) in " ".join(p.info["cmdline"] or [])]
    assert leftovers == [], [p.info["cmdline"] for p in leftovers]


def test_keep_running_serves_until_interrupted(tmp_path: Path) -> None:
    import shlex
    import signal
    import time

    from genesig.client import ModelServerClient

    log = tmp_path / "demo.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "genesig.cli", "demo", "--workdir", str(tmp_path / "demo"), "--keep-running"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env={**os.environ, "COLUMNS": "200"},
        )
    try:
        deadline = time.monotonic() + 300
        while "stays up until Ctrl-C" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        text = log.read_text()
        assert "example predictions" in text, "the results are shown while it keeps running, not after Ctrl-C"
        url = re.search(r"--url (http://127\.0\.0\.1:\d+)", text).group(1)  # type: ignore[union-attr]
        assert ModelServerClient(url).request("GET", "/metrics").json()["LoadedModelCount"] >= 1
        # The command it suggests works as printed: its input file exists, and no AWS region or credentials needed.
        suggested = re.search(r"^\s*(genesig predict .*)$", text, re.MULTILINE).group(1)  # type: ignore[union-attr]
        no_aws = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | {"AWS_CONFIG_FILE": "/nonexistent"}
        predicted = subprocess.run(
            [sys.executable, "-m", "genesig.cli", *shlex.split(suggested)[1:]],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
            env={**no_aws, "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "COLUMNS": "200"},
        )
        assert predicted.returncode == 0 and "risk_group" in predicted.stdout, predicted.stderr
        assert "Traceback" not in predicted.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
    time.sleep(1)
    leftovers = [p for p in psutil.process_iter(["cmdline"]) if str(tmp_path) in " ".join(p.info["cmdline"] or [])]
    assert leftovers == [], [p.info["cmdline"] for p in leftovers]
