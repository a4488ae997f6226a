"""`genesig step ...`: the same steps one at a time through folders, as SageMaker jobs run them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from genesig.cli.steps import GATE_FAILED_EXIT
from tests.evaluations import an_evaluation


def step(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "genesig.cli", "step", *map(str, args)], capture_output=True, text=True, timeout=300
    )


def test_steps_chain_through_folders(synthetic_csv: Path, tmp_path: Path) -> None:
    prepared, model, evaluation = tmp_path / "prepared", tmp_path / "model", tmp_path / "evaluation"
    registry, prefix = tmp_path / "registry", tmp_path / "prefix"
    for args in (
        ("preprocess", "--data", synthetic_csv, "--signature", "metagene_19", "--out", prepared),
        ("train", "--prepared", prepared, "--out", model, "--cv-repeats", "2"),
        ("evaluate", "--prepared", prepared, "--model", model, "--out", evaluation, "--permutations", "60"),
        ("gate", "--evaluation", evaluation / "evaluation.json", "--threshold", "0.55", "--out", evaluation),
        (
            "register",
            "--model",
            model,
            "--evaluation",
            evaluation / "evaluation.json",
            "--registry",
            registry,
            "--approve",
        ),
        ("deploy", "--registry", registry, "--group", "metagene_19", "--prefix", prefix),
    ):
        result = step(*args)
        assert result.returncode == 0, f"{args[0]}: {result.stderr[-2000:]}"
    assert (prefix / "metagene_19-v1.tar.gz").is_file()
    gate = json.loads((evaluation / "gate.json").read_text())
    assert gate["passed"] is True and gate["outcome"] == "passed"
    # One signature on its own: its own permutation test decides with the threshold (q is its p), final at once.
    done = json.loads((evaluation / "evaluation.json").read_text())
    contained = done["significance"]["self_contained"]
    assert done["gate"]["final"] is True and contained["permutations"] == 60
    assert contained["q_value"] == contained["p_value"] <= 0.1 and "60 permutations of 1 signature" in contained["null"]
    assert "p " in gate["reason"] and "with the outcome permuted" in gate["reason"]
    assert done["significance"]["competitive"]["status"] == "off", "random gene sets need the whole cohort"


def test_the_one_signature_steps_test_it_alone() -> None:
    """One signature alone: its own permutation test with the threshold (--permutations, p at most --fdr); random
    gene sets of the cohort are a run's (run-local, the signature-set run). Re-gating reads the evaluation's p."""
    shown = step("evaluate", "--help")
    options = set(shown.stdout.split())
    assert shown.returncode == 0 and {"--threshold", "--gate-on", "--fdr", "--permutations"} <= options
    assert "--competitive" not in shown.stdout and "--random-sets" not in shown.stdout
    shown = step("gate", "--help")
    assert shown.returncode == 0 and "--fdr" in shown.stdout and "--permutations" not in shown.stdout


def test_gate_failure_has_its_own_exit_status(tmp_path: Path) -> None:
    evaluation = tmp_path / "evaluation.json"
    evaluation.write_bytes(
        an_evaluation(metric="auc", target="binary", cross_validation={"mean": 0.52, "interval": [0.4, 0.6]}).to_json()
    )
    result = step("gate", "--evaluation", evaluation, "--threshold", "0.6")
    assert result.returncode == GATE_FAILED_EXIT and "cross-validated mean auc 0.520 < threshold 0.600" in result.stderr


def test_step_errors_are_clear(tmp_path: Path) -> None:
    result = step("train", "--prepared", tmp_path, "--out", tmp_path / "m")
    assert result.returncode == 2 and "has no prepared.json: run the preprocess step first" in result.stderr


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "no such file (the evaluate step's evaluation.json)"),
        ("{", "not valid JSON"),
        ("[1, 2]", "not an evaluation written by the evaluate step"),
    ],
)
def test_a_missing_or_broken_evaluation_is_one_line(tmp_path: Path, content: str | None, problem: str) -> None:
    evaluation = tmp_path / "evaluation.json"
    if content is not None:
        evaluation.write_text(content)
    model = tmp_path / "model"
    model.mkdir()
    (model / "m-v1.tar.gz").write_bytes(b"")  # never read: the evaluation is refused first
    for args in (
        ("gate", "--evaluation", evaluation, "--threshold", "0.6"),
        ("register", "--model", model, "--evaluation", evaluation, "--registry", tmp_path / "registry"),
    ):
        result = step(*args)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert problem in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "registry").exists()


def test_a_missing_model_is_one_line(tmp_path: Path) -> None:
    result = step("register", "--model", tmp_path / "nope", "--evaluation", tmp_path, "--registry", tmp_path / "r")
    assert result.returncode == 2 and "--model" in result.stderr and "no such file or folder" in result.stderr
