"""The scale benchmark's machinery on a tiny model set (no timing is asserted: benchmarks measure, tests check)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from genesig.artifact.synthetic import write_synthetic_artifact

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import scale  # noqa: E402


def test_zipf_probabilities_follow_the_skew_over_shuffled_ranks() -> None:
    p = scale.zipf_probabilities(50, 1.2, seed=3)
    assert p.sum() == pytest.approx(1.0)
    ranked = np.sort(p)[::-1]
    assert ranked[0] / ranked[1] == pytest.approx(2**1.2) and ranked[0] / ranked[9] == pytest.approx(10**1.2)
    assert np.argmax(p) != 0 or np.argmax(scale.zipf_probabilities(50, 1.2, seed=4)) != 0, "ranks are shuffled"
    np.testing.assert_array_equal(p, scale.zipf_probabilities(50, 1.2, seed=3))


def test_after_first_touch_leaves_out_requests_sent_before_their_model_was_first_answered() -> None:
    first = scale.Record(0.0, 500.0, 200, "miss", 7)  # answered at 0.5 s
    waited = scale.Record(0.2, 300.0, 200, "miss", 7)  # sent while the first load was under way
    later = scale.Record(0.6, 1.0, 200, "hit", 7)
    other = scale.Record(0.6, 400.0, 200, "miss", 8)  # another model's first touch
    assert scale.after_first_touch([later, other, first, waited]) == [later]


def test_scale_benchmark_runs_both_servers_and_reports_every_figure(tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    for i in range(6):
        write_synthetic_artifact(prefix, f"sig{i}", [f"G{j}" for j in range(3 + i)], seed=i)
    out = tmp_path / "scale.json"
    run = subprocess.run(
        [sys.executable, str(BENCH / "scale.py"), "--set", f"tiny={prefix}", "--skews", "1.0", "--clients", "2"]
        + ["--duration", "4", "--warmup", "2", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    rows = {r["server"]: r for r in json.loads(out.read_text())["runs"]}
    assert set(rows) == {"genesig", "stock"}
    for row in rows.values():
        assert row["requests"] > 0 and row["errors"] == 0, row["statuses"]
        assert row["leftover_processes"] == 0
        assert 0 <= row["hit_rate"] <= 1 and row["peak_memory_mb"] > 0
        assert 0 <= row["hit_rate_after_first_touch"] <= 1
        assert row["latency_ms"]["p50"] is not None
    assert set(rows["genesig"]["ratio_to_stock"]) >= {"requests_per_s", "cold_load_latency_ms.p50", "peak_memory_mb"}
    assert "| tiny | 1.0 | 2 |" in run.stdout, "the README's paired table"
