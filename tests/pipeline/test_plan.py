"""`genesig pipeline plan`: the cost of a signature set before it is paid, for both designs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from genesig.errors import DataError
from genesig.pipeline.sagemaker.plan import Assumptions, plan

GO = Path(__file__).resolve().parents[3] / "shared" / "data" / "go-biological-process-2021.gmt"


def test_the_go_set_in_one_run_is_a_few_jobs_and_minutes_not_days() -> None:
    estimate = plan(6036, 12)
    run, each = estimate["signature_set"], estimate["per_signature"]
    assert run["jobs"] <= 30 and run["wall_minutes"] < 30
    assert each["jobs"] > 18_000 and each["wall_minutes"] > 10 * 24 * 60, "about two weeks at 4 at a time"
    assert run["cost_usd"] < each["cost_usd"] / 100


def test_more_shards_shorten_the_run_and_assumptions_change_the_numbers() -> None:
    assert plan(6036, 24)["signature_set"]["wall_minutes"] < plan(6036, 4)["signature_set"]["wall_minutes"]
    dearer = plan(1000, 8, Assumptions(price_per_instance_hour=1.0))["signature_set"]["cost_usd"]
    assert dearer > plan(1000, 8)["signature_set"]["cost_usd"]
    with pytest.raises(DataError, match="--shards must be between 1 and 100"):
        plan(10, 0)


def test_plan_command_prints_json_per_design() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "genesig.cli", "pipeline", "plan", "--signatures", str(GO), "--shards", "12", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"},  # no AWS set-up: plan makes no call
    )
    assert result.returncode == 0, result.stderr[-2000:]
    doc = json.loads(result.stdout)
    assert doc["signatures"] == 6036
    for design in ("signature_set", "per_signature"):
        assert {"jobs", "instance_minutes", "wall_minutes", "cost_usd"} <= set(doc[design])


def test_the_gates_null_work_is_counted_per_signature_and_per_competitive_size() -> None:
    off = Assumptions(permutations=0, random_sets=0)
    without = plan(1000, 4, off, competitive_sizes=30)["signature_set"]
    one_instance = plan(1000, 1, competitive_sizes=30)["signature_set"]
    four = plan(1000, 4, competitive_sizes=30)
    assert four["permutations_per_signature"] == 1, "200 over 1,000 signatures: one each"
    # 200 random sets over 30 sizes: the floor of 20 at each.
    assert four["random_sets_per_size"] == 20 and plan(1000, 4, competitive_sizes=2)["random_sets_per_size"] == 100
    # One permutation per signature and 30 sizes x 20 random sets at 0.25 s each: 4.2 + 2.5 instance-minutes on one
    # instance; at 4 instances 250 signatures each and 8 of the sizes (dealt once each).
    assert one_instance["instance_minutes"] - plan(1000, 1, off)["signature_set"]["instance_minutes"] == pytest.approx(
        (1000 + 30 * 20) * 0.25 / 60, abs=0.1
    )
    extra = four["signature_set"]["instance_minutes"] - without["instance_minutes"]
    assert extra == pytest.approx(4 * (250 + 8 * 20) * 0.25 / 60, abs=0.1)
    assert four["signature_set"]["wall_minutes"] < one_instance["wall_minutes"]
    # One signature alone draws every permutation for itself, in its own evaluation.
    alone = plan(1, 1)["per_signature"]["instance_minutes"] - plan(1, 1, off)["per_signature"]["instance_minutes"]
    assert alone == pytest.approx(200 * 0.25 / 60, abs=0.1)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"permutations": -3}, "--permutations must be 0 or more, not -3"),
        ({"pass_rate": 2.0}, "--pass-rate is a share of the signatures: at most 1"),
        ({"max_parallel": 0}, "--max-parallel must be at least 1"),
        ({"price_per_instance_hour": -1.0}, "--price-per-hour must be 0 or more"),
        ({"training_startup_minutes": -4.0}, "--training-startup-minutes must be 0 or more"),
    ],
)
def test_an_impossible_assumption_is_refused_naming_its_option(change: dict[str, float], problem: str) -> None:
    with pytest.raises(DataError, match=problem):
        Assumptions(**change)  # type: ignore[arg-type]
