"""The reports: the log-rank test against lifelines', the per-signature figure drawn from the evaluation's files, and
the run-level plot against the random null."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import numpy as np
import pandas as pd
import pytest
from lifelines.statistics import logrank_test, multivariate_logrank_test

from genesig.pipeline.evaluation import Evaluation
from genesig.pipeline.report import RUN_PLOT_FILE, logrank_p, write_report
from genesig.pipeline.run import RunOptions, run_local
from genesig.pipeline.settings import GateSettings, TrainSettings
from genesig.pipeline.signatures import default_signatures
from genesig.pipeline.synthetic import SyntheticSpec, write_synthetic_cohort
from tests.evaluations import an_evaluation


@pytest.mark.parametrize("groups", [2, 3])
def test_the_logrank_p_is_lifelines(groups: int) -> None:
    rng = np.random.default_rng(groups)
    labels = np.array([f"g{i}" for i in rng.integers(0, groups, size=90)])
    time = rng.integers(1, 30, size=90).astype(float)  # ties
    time[labels == "g1"] *= 0.6
    event = rng.random(90) < 0.7
    if groups == 2:
        a, b = labels == "g0", labels == "g1"
        reference = logrank_test(time[a], time[b], event[a], event[b]).p_value
    else:
        reference = multivariate_logrank_test(time, labels, event).p_value
    assert logrank_p(time, event, labels.tolist()) == pytest.approx(reference, rel=1e-9)


def test_no_logrank_p_without_two_groups_or_an_event() -> None:
    time = np.arange(1.0, 7.0)
    assert logrank_p(time, np.ones(6, dtype=bool), ["low"] * 6) is None
    assert logrank_p(time, np.zeros(6, dtype=bool), ["low", "high"] * 3) is None


def evaluation(target: str, significance: dict[str, object] | None) -> Evaluation:
    return an_evaluation(
        target=target,
        metric="auc" if target == "binary" else "c_index",
        output="probability" if target == "binary" else "risk_score",
        time_column=None if target == "binary" else "Months",
        significance=significance,
    )


BOTH = {
    "observed": 0.69,
    "self_contained": {"p_value": 0.001, "q_value": 0.02, "permutations": 210},
    "competitive": {"status": "tested", "p_value": 0.04, "q_value": 0.3},
}


@pytest.mark.parametrize("target", ["binary", "time_to_event"])
@pytest.mark.parametrize("significance", [None, BOTH])
def test_the_report_is_drawn_from_the_evaluations_files(
    target: str, significance: dict[str, object] | None, tmp_path: Path
) -> None:
    rng = np.random.default_rng(0)
    table = pd.DataFrame(
        {
            "Case_ID": [f"P{i}" for i in range(40)],
            "probability" if target == "binary" else "risk_score": rng.normal(size=40),
            "risk_group": ["low", "high"] * 20,
            "SurvivalStatus": (rng.random(40) < 0.45).astype(int),
        }
    )
    if target == "time_to_event":
        table["Months"] = rng.exponential(30, size=40)
    path = write_report(evaluation(target, significance), table, tmp_path)
    assert path.name == "report.png" and path.stat().st_size > 20_000
    from matplotlib.image import imread

    height, width = imread(path).shape[:2]
    assert (width, height) == (1100, 580), "large enough to read at a glance"


def test_a_run_with_the_null_redraws_each_report_with_its_q_and_plots_the_run_against_the_null(tmp_path: Path) -> None:
    data = write_synthetic_cohort(
        tmp_path / "c.csv", default_signatures(), SyntheticSpec(seed=1, planted={"metagene_19": 2.0})
    )
    summary = run_local(
        RunOptions(
            data=data,
            workdir=tmp_path / "w",
            train=TrainSettings(cv_repeats=1, l2=0.1),
            gate=GateSettings(permutations=40, random_sets=20),
            jobs=2,  # the verdicts of the seven signatures are recorded in two processes
        )
    )
    assert (tmp_path / "w" / RUN_PLOT_FILE).stat().st_size > 20_000
    for result in summary.results:
        folder = Path(result.artifact or "").parent.parent / "evaluation"
        recorded = json.loads((folder / "evaluation.json").read_text())
        assert recorded["significance"]["self_contained"]["q_value"] == result.q_value is not None
        assert recorded["significance"]["competitive"]["q_value"] == result.competitive_q
        assert recorded["gate"]["final"] is True, "decided by the run, no longer pending its FDR"
        assert recorded["gate"]["outcome"] == result.outcome
        report = folder / "report.png"
        assert report.stat().st_mtime_ns >= (folder / "evaluation.json").stat().st_mtime_ns, "drawn after the verdict"


def panel_evaluation(cv_mean: float, passed: bool, q: float | None, outcome: str) -> Evaluation:
    significance = (
        {
            "observed": 0.666,
            "self_contained": {"p_value": 0.011, "q_value": q, "permutations": 210},
            "competitive": {"status": "not applicable"},
        }
        if q is not None
        else {}
    )
    return an_evaluation(
        cross_validation={"mean": cv_mean, "interval": [0.5, 0.8]},
        test={"value": 0.7, "patients": 40, "events": 14},
        model={"coverage": 1.0, "l2": 0.1, "l2_chosen_by": "inner_cv"},
        significance=significance,
        gate={"passed": passed, "outcome": outcome, "value": cv_mean, "threshold": 0.6, "reason": "r", "final": True},
    )


@pytest.mark.parametrize(
    ("cv_mean", "passed", "q", "verdict"),
    [
        (0.68, True, 0.0385, "PASSED"),
        (0.68, False, 0.3, "NOT SIGNIFICANT"),
        (0.55, False, 0.9, "BELOW THRESHOLD"),
        (0.55, False, None, "BELOW THRESHOLD"),
    ],
)
def test_the_panel_names_the_outcome_as_the_run_table_does_and_keeps_labels_apart(
    cv_mean: float, passed: bool, q: float | None, verdict: str
) -> None:
    from genesig.pipeline.report import panel_text

    lines = panel_text(panel_evaluation(cv_mean, passed, q, verdict.lower()), "C-index").splitlines()
    assert verdict in lines
    assert all(" " in line.strip() for line in lines if line.strip() and line.strip() != verdict and line != "r")
    if q is not None:
        assert "pooled OOF C-index 0.666" in lines and f"q (run, BH)       {q:.3g}" in lines
        assert "p, outcome perm.  0.011 (210 perm.)" in lines and "vs random sets    not applicable" in lines


@pytest.mark.parametrize(
    ("cv_mean", "passed", "verdict"), [(0.68, True, "THRESHOLD PASSED: the run"), (0.55, False, "BELOW THRESHOLD")]
)
def test_a_pending_panel_says_threshold_passed_only_when_it_did(cv_mean: float, passed: bool, verdict: str) -> None:
    """A set-run instance draws the report before the run decides: a signature below the threshold fails whatever the
    run's test says, and its panel must not say it passed."""
    from genesig.pipeline.report import panel_text

    evaluation = panel_evaluation(cv_mean, passed, None, "")
    evaluation.gate = msgspec.structs.replace(evaluation.decided, final=False)
    lines = panel_text(evaluation, "C-index").splitlines()
    assert verdict in lines
    assert ("THRESHOLD PASSED: the run" in lines) is passed
