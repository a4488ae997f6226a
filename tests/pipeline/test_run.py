"""run-local end to end on synthetic cohorts: planted effects pass the gate, noise fails, re-runs change nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from genesig.artifact import read_artifact
from genesig.errors import DataError
from genesig.pipeline.results import ROW_COLUMNS, Outcome
from genesig.pipeline.run import RunOptions, run_local
from genesig.pipeline.settings import GateSettings, TrainSettings
from genesig.pipeline.synthetic import SyntheticSpec, write_synthetic_cohort

from .conftest import noise_and_planted

SEEDS = range(6)

# The registry, re-runs and approval are what these tests are about, not the gate: the threshold alone decides here.
THRESHOLD_ONLY = GateSettings(permutations=0, competitive="off")


def write_signatures(path: Path) -> Path:
    path.write_text(json.dumps({s.name: list(s.genes) for s in noise_and_planted(4)}))
    return path


def test_planted_signatures_pass_and_noise_fails_over_seeds(
    tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    signatures_file = write_signatures(tmp_path / "sigs.json")
    verdicts: dict[str, list[bool]] = {}
    for seed in SEEDS:
        # n=200: at n=120 the gate's power for these effects is ~0.7 (small-cohort variance, see README).
        planted = {"planted_a": 2.0, "planted_b": 1.5}
        spec = SyntheticSpec(n_patients=200, seed=seed, planted=planted)
        data = write_synthetic_cohort(tmp_path / f"c{seed}.csv", noise_and_planted(4), spec)
        summary = run_local(
            RunOptions(
                data=data,
                workdir=tmp_path / f"w{seed}",
                signatures_file=signatures_file,
                train=TrainSettings(seed=seed, cv_repeats=3),
                # The default gate (the competitive test is reported, not gated: its cost is not this test's).
                gate=GateSettings(competitive="off"),
            )
        )
        for result in summary.results:
            verdicts.setdefault(result.signature.split("_")[0], []).append(result.passed)
    planted_rate = sum(verdicts["planted"]) / len(verdicts["planted"])
    noise_rate = sum(verdicts["noise"]) / len(verdicts["noise"])
    record_property("planted_pass_rate", planted_rate)
    record_property("noise_pass_rate", noise_rate)
    assert planted_rate >= 0.8, verdicts
    assert noise_rate <= 0.15, verdicts


def test_rerun_registers_and_deploys_nothing_new(synthetic_csv: Path, tmp_path: Path) -> None:
    options = RunOptions(
        data=synthetic_csv, workdir=tmp_path / "w", approve=True, train=TrainSettings(cv_repeats=2), gate=THRESHOLD_ONLY
    )
    first = run_local(options)
    deployed = sorted(p.name for p in (tmp_path / "w" / "mme-prefix").iterdir())
    assert "metagene_19-v1.tar.gz" in deployed
    second = run_local(options)
    assert sorted(p.name for p in (tmp_path / "w" / "mme-prefix").iterdir()) == deployed
    for a, b in zip(first.results, second.results, strict=True):
        assert (a.version, a.deployed) == (b.version, b.deployed)
        if b.passed:
            assert "unchanged since version 1" in b.reason


def test_parallel_jobs_give_the_same_models_verdicts_and_order_as_one_job(synthetic_csv: Path, tmp_path: Path) -> None:
    serial = run_local(
        RunOptions(data=synthetic_csv, workdir=tmp_path / "one", approve=True, train=TrainSettings(cv_repeats=2))
    )
    seen: list[str] = []
    parallel = run_local(
        RunOptions(
            data=synthetic_csv, workdir=tmp_path / "two", approve=True, train=TrainSettings(cv_repeats=2), jobs=2
        ),
        on_result=lambda r: seen.append(r.signature),
    )
    assert [r.signature for r in parallel.results] == [r.signature for r in serial.results], "input order kept"
    assert sorted(seen) == sorted(r.signature for r in serial.results), "progress reported once per signature"
    for a, b in zip(serial.results, parallel.results, strict=True):
        assert (a.outcome, a.cv_mean, a.test, a.passed, a.deployed) == (
            b.outcome,
            b.cv_mean,
            b.test,
            b.passed,
            b.deployed,
        )
    for name in (r.deployed for r in serial.results if r.deployed):
        one = read_artifact(tmp_path / "one" / "mme-prefix" / name).manifest
        two = read_artifact(tmp_path / "two" / "mme-prefix" / name).manifest
        assert one.files == two.files, f"{name}: the same weights whatever --jobs"


def test_a_worker_that_dies_fails_only_its_signature(synthetic_csv: Path, tmp_path: Path) -> None:
    from genesig.pipeline.cohort import read_cohort
    from genesig.pipeline.run import WORKER_ATTEMPTS, _run_parallel, load_signatures
    from genesig.pipeline.signatures import match

    from .dying_worker import VICTIM, run_or_die

    options = RunOptions(data=synthetic_csv, workdir=tmp_path / "w", train=TrainSettings(cv_repeats=1), jobs=2)
    cohort = read_cohort(synthetic_csv)
    matched = [match(s, cohort.candidate_genes(), 2) for s in load_signatures(None)]
    reported: list[str] = []
    results = _run_parallel(options, cohort, matched, 2, lambda r: reported.append(r.signature), worker=run_or_die)
    by_name = {r.signature: r for r in results}
    assert by_name[VICTIM].outcome == "error"
    assert f"died {WORKER_ATTEMPTS} times" in by_name[VICTIM].reason
    assert all(r.evaluated for name, r in by_name.items() if name != VICTIM), "the others were run again"
    assert sorted(reported) == sorted(by_name), "each signature reported once"


def test_negative_jobs_are_refused(synthetic_csv: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="--jobs must be 0"):
        run_local(RunOptions(data=synthetic_csv, workdir=tmp_path / "w", jobs=-1))


def test_without_approval_nothing_is_deployed(synthetic_csv: Path, tmp_path: Path) -> None:
    summary = run_local(
        RunOptions(
            data=synthetic_csv,
            workdir=tmp_path / "w",
            train=TrainSettings(cv_repeats=2),
            signatures=("metagene_19",),
            gate=THRESHOLD_ONLY,
        )
    )
    [result] = summary.results
    assert (result.passed, result.approval_status, result.deployed) == (True, "PendingManualApproval", "")
    assert not (tmp_path / "w" / "mme-prefix").exists()


def test_summary_json_has_each_signatures_verdict_and_reason(synthetic_csv: Path, tmp_path: Path) -> None:
    run_local(RunOptions(data=synthetic_csv, workdir=tmp_path / "w", train=TrainSettings(cv_repeats=2)))
    doc = json.loads((tmp_path / "w" / "summary.json").read_text())
    assert len(doc["signatures"]) == 7
    run = doc["run"]
    gate = (run["threshold"], run["fdr"], run["permutations"], run["competitive"], run["random_sets"])
    assert gate == (0.6, 0.1, 200, "report", 200), "the gate it was run with"
    assert "permuted" in run["self_contained_null"] and "random gene sets" in run["competitive_null"]
    assert sum(run["counts"].values()) == 7 and run["data"] == str(synthetic_csv)
    header = (tmp_path / "w" / "summary.csv").read_text().splitlines()[0].split(",")
    assert tuple(header) == ROW_COLUMNS and [list(r) for r in doc["signatures"]] == [list(ROW_COLUMNS)] * 7, (
        "the JSON rows and the CSV have the same columns, in the same order (as the set run's report)"
    )
    both = {"p_value", "q_value", "competitive", "competitive_p", "competitive_q"}
    assert {"cv_mean", "cv_lower", "cv_upper", "cv_pooled", "coverage", *both} <= set(header)
    for row in doc["signatures"]:
        assert {"signature", "genes", "metric", "cv_mean", "cv_lower", "outcome", "reason"} <= set(row)
        assert row["outcome"] in {o.value for o in Outcome} and row["reason"]
        assert "permuted" not in row, "the run's null draws are not a result"
        # The seed's 21 genes: ALL holds every one of them, so random sets of its size would be ALL itself.
        assert row["competitive"] == ("not applicable" if row["signature"] == "ALL" else "tested"), row
        assert (row["competitive_p"] is None) == (row["signature"] == "ALL")


def test_small_signatures_are_skipped_with_a_reason_and_failures_stay_isolated(tmp_path: Path) -> None:
    sigs = tmp_path / "s.json"
    sigs.write_text(json.dumps({"tiny": ["LRIG1", "NOPE1", "NOPE2"], "fine": ["LRIG1", "HPGD", "GDF15"]}))
    data = tmp_path / "c.csv"
    from genesig.pipeline.signatures import default_signatures

    frame = write_synthetic_cohort(data, default_signatures(), SyntheticSpec(seed=2, planted={"metagene_19": 1.5}))
    text = frame.read_text().splitlines()
    summary = run_local(
        RunOptions(data=data, workdir=tmp_path / "w", signatures_file=sigs, train=TrainSettings(cv_repeats=2))
    )
    tiny, fine = summary.results
    assert (
        tiny.outcome == "skipped"
        and tiny.reason.startswith("only 1 of 3 genes")
        and tiny.missing_genes == ["NOPE1", "NOPE2"]
    )
    assert fine.evaluated
    assert len(text) == 121


def test_cli_run_local_and_registry(synthetic_csv: Path, tmp_path: Path) -> None:
    work = tmp_path / "w"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "genesig.cli",
            "run-local",
            "--data",
            str(synthetic_csv),
            "--workdir",
            str(work),
            "--signature",
            "metagene_19",
            "--cv-repeats",
            "2",
            "--permutations",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "160"},
    )
    assert run.returncode == 0, run.stderr
    assert "metagene_19" in run.stdout and "v1 pending" in run.stdout
    approve = subprocess.run(
        [
            sys.executable,
            "-m",
            "genesig.cli",
            "registry",
            "approve",
            "metagene_19",
            "1",
            "--workdir",
            str(work),
            "--reason",
            "reviewed",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert approve.returncode == 0, approve.stderr
    sync = subprocess.run(
        [sys.executable, "-m", "genesig.cli", "sync", "--workdir", str(work)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sync.returncode == 0 and "1 deployed" in sync.stdout and "metagene_19-v1.tar.gz" in sync.stdout
    assert (work / "mme-prefix" / "metagene_19-v1.tar.gz").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "nowhere.csv"], "data file nowhere.csv does not exist"),
        (["--signature", "nope"], "no signature named 'nope'"),
        (["--event-column", "Dead"], "missing column(s) Dead"),
    ],
)
def test_cli_bad_input_gives_a_clear_error(synthetic_csv: Path, tmp_path: Path, args: list[str], message: str) -> None:
    base = ["--data", str(synthetic_csv)] if "--data" not in args else []
    result = subprocess.run(
        [sys.executable, "-m", "genesig.cli", "run-local", "--workdir", str(tmp_path / "w"), *base, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
