"""Our AUC and C-index equal scikit-learn's and lifelines' on the same predictions."""

from __future__ import annotations

import numpy as np
import pytest
from lifelines.utils import concordance_index
from sklearn.metrics import roc_auc_score

from genesig.errors import DataError
from genesig.pipeline.metrics import auc, c_index


@pytest.mark.parametrize("seed", range(5))
def test_auc_equals_scikit_learn_including_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    event = rng.random(80) < 0.35
    score = np.round(rng.normal(size=80) + event * 0.8, 1)  # rounding makes ties
    assert auc(event=event, risk_score=score) == pytest.approx(roc_auc_score(event, score), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_c_index_equals_lifelines(seed: int) -> None:
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=60)
    time = rng.exponential(1 / np.exp(risk))
    event = rng.random(60) < 0.6
    risk_noisy = np.round(risk + rng.normal(size=60), 1)
    # lifelines scores survival (higher = longer), ours risk (higher = worse): pass the negated risk.
    expected = concordance_index(time, -risk_noisy, event)
    assert c_index(time=time, event=event, risk_score=risk_noisy) == pytest.approx(expected, abs=1e-12)


def test_errors_name_the_problem() -> None:
    with pytest.raises(DataError, match="'event' has 3 samples but 'risk_score' has 2"):
        auc(event=np.array([1, 0, 1]), risk_score=np.array([0.1, 0.2]))
    with pytest.raises(DataError, match="with and without the event"):
        auc(event=np.array([1, 1]), risk_score=np.array([0.1, 0.2]))
    with pytest.raises(DataError, match="all samples are censored"):
        c_index(time=np.array([1.0, 2.0]), event=np.array([0, 0]), risk_score=np.array([0.1, 0.2]))


def test_a_majority_class_predictor_has_auc_one_half() -> None:
    # The reference gated on accuracy, which a constant predictor scores at 0.647 on the seed cohort.
    event = np.array([1] * 42 + [0] * 77, dtype=bool)
    assert auc(event=event, risk_score=np.zeros(119)) == 0.5
