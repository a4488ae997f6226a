"""Cross-validation and the penalty chosen by an inner CV nested inside it."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import RepeatedStratifiedKFold

from genesig.pipeline import validation
from genesig.pipeline.settings import L2_GRID, TrainSettings
from genesig.pipeline.validation import choose_penalty, cross_validate_design, plan_folds


def cohort(seed: int, n: int, genes: int, effect: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Raw expression (log-normal) with ``effect`` on the first three genes' log values, in both time and status."""
    rng = np.random.default_rng(seed)
    logged = rng.normal(2.0, 1.0, size=(n, genes))
    eta = effect * (logged[:, 0] + logged[:, 1] - logged[:, 2] - 2.0)
    time = rng.exponential(1 / np.exp(eta))
    event = rng.random(n) < 1 / (1 + np.exp(-(eta + 0.8)))  # the effect reaches the status too (binary target)
    return np.exp(logged), event, time, [f"G{i}" for i in range(genes)]


def test_a_fixed_penalty_is_used_as_given() -> None:
    raw, event, time, genes = cohort(0, 60, 5, 1.0)
    choice = choose_penalty(raw, event, time, "time_to_event", TrainSettings(l2=0.3), seed=0)
    assert (choice.l2, choice.chosen_by, choice.candidates) == (0.3, "fixed", ())


@pytest.mark.parametrize("target", ["binary", "time_to_event"])
def test_the_inner_cv_shrinks_noise_hard_and_a_strong_signal_little(target: str) -> None:
    def choose(raw: np.ndarray, event: np.ndarray, time: np.ndarray, genes: list[str]) -> validation.PenaltyChoice:
        times = time if target == "time_to_event" else None
        return choose_penalty(raw, event, times, target, TrainSettings(), seed=0)  # type: ignore[arg-type]

    noise = choose(*cohort(1, 90, 60, 0.0))  # 60 genes of noise: any weight is over-confident
    assert noise.chosen_by == "inner_cv" and noise.candidates == tuple(sorted(L2_GRID))
    assert noise.l2 >= 10, noise  # heavy shrinkage: 10 and 100 are about equally good on pure noise
    strong = choose(*cohort(2, 300, 3, 1.5))  # three genes, every one carrying the effect
    assert strong.l2 < 1.0, strong
    assert strong.inner_log_likelihood[strong.candidates.index(strong.l2)] == max(strong.inner_log_likelihood)


def test_the_penalty_of_each_outer_fold_is_chosen_from_that_folds_fitting_rows_only() -> None:
    """Nested: the rows an outer fold scores never reach the inner CV that chose its penalty, and that penalty is the
    one an inner CV on the fold's fitting rows alone chooses."""
    raw, event, time, genes = cohort(3, 80, 6, 0.8)
    config = TrainSettings(cv_folds=4, cv_repeats=2)
    plan = plan_folds(event, config, seed=5)
    splits = list(RepeatedStratifiedKFold(n_splits=4, n_repeats=2, random_state=5).split(raw, event))
    assert len(plan.outer) == len(splits) == len(plan.inner)
    for (fit_rows, score_rows), (fit, score), inner in zip(splits, plan.outer, plan.inner, strict=True):
        assert np.array_equal(fit, fit_rows) and np.array_equal(score, score_rows)
        for inner_fit, inner_score in inner:
            assert set(inner_fit) | set(inner_score) == set(fit_rows) and not set(inner_score) & set(inner_fit)
    result = cross_validate_design(raw, event, time, "time_to_event", config, seed=5)
    assert len(result.values) == len(result.penalties) == len(splits)
    for f, (fit_rows, _) in enumerate(splits):
        alone = choose_penalty(raw[fit_rows], event[fit_rows], time[fit_rows], "time_to_event", config, seed=5 + f)
        assert result.penalties[f] == alone.l2
    assert set(result.penalties) <= set(L2_GRID)


def test_tuning_is_deterministic() -> None:
    raw, event, time, genes = cohort(4, 70, 8, 0.5)
    a = cross_validate_design(raw, event, time, "time_to_event", TrainSettings(cv_repeats=2), seed=1)
    b = cross_validate_design(raw, event, time, "time_to_event", TrainSettings(cv_repeats=2), seed=1)
    assert (a.values, a.penalties) == (b.values, b.penalties)


@pytest.mark.parametrize("target", ["binary", "time_to_event"])
def test_the_pooled_metric_scores_each_repeats_out_of_fold_predictions_once(target: str) -> None:
    """Per repeat, every training row is scored once by the fold model that did not see it; those scores are pooled
    and scored together (what both of the gate's tests compare), not averaged per fold."""
    from genesig.artifact import SignatureModel
    from genesig.artifact.model import apply_preprocessing
    from genesig.pipeline.metrics import discrimination
    from genesig.pipeline.model import fit_preprocessing, train

    raw, event, time, genes = cohort(6, 90, 4, 0.6)
    times = time if target == "time_to_event" else None
    config = TrainSettings(cv_folds=3, cv_repeats=2, l2=1.0)
    result = cross_validate_design(raw, event, times, target, config, seed=9)  # type: ignore[arg-type]
    assert len(result.pooled) == 2 and result.pooled_mean == pytest.approx(np.mean(result.pooled))

    expected = []
    splits = list(RepeatedStratifiedKFold(n_splits=3, n_repeats=2, random_state=9).split(raw, event))
    for repeat in range(2):
        scores = np.full(len(event), np.nan)
        for fit_rows, score_rows in splits[3 * repeat : 3 * repeat + 3]:
            prep = fit_preprocessing(raw[fit_rows], True)
            fit_times = None if times is None else times[fit_rows]
            weights = train(
                apply_preprocessing(prep, genes, raw[fit_rows]), event[fit_rows], fit_times, target, config, l2=1.0
            )  # type: ignore[arg-type]
            stub = validation.manifest_stub(genes, target, prep, config)  # type: ignore[arg-type]
            scores[score_rows] = SignatureModel(stub, weights).linear_predictor(raw[score_rows])
        assert not np.isnan(scores).any(), "each row scored once per repeat"
        expected.append(discrimination(event=event, time=times, risk_score=scores))
    np.testing.assert_allclose(result.pooled, expected, rtol=1e-12)
    assert result.pooled_mean != pytest.approx(result.mean), "pooled, not the mean of the folds"


def test_rows_in_small_stacks_give_what_one_stack_gives(monkeypatch: pytest.MonkeyPatch) -> None:
    """The permutations of a large signature are cross-validated a few designs at a time: how they are grouped must
    not change a single value."""
    from genesig.pipeline import validation

    rng = np.random.default_rng(3)
    raw = rng.lognormal(size=(60, 6))
    event = (rng.random(60) < 0.4).astype(int)
    rows = np.stack([np.arange(60)] + [rng.permutation(60) for _ in range(5)])
    config = TrainSettings(cv_folds=3, cv_repeats=1)
    whole = validation.cross_validate_rows(raw, rows, event, None, "binary", config, 0)
    monkeypatch.setattr(validation, "ROWS_BYTES", raw.nbytes * 2)  # two designs per stack
    stacked = validation.cross_validate_rows(raw, rows, event, None, "binary", config, 0)
    assert [cv.pooled for cv in stacked] == [cv.pooled for cv in whole]
    assert [cv.values for cv in stacked] == [cv.values for cv in whole]
