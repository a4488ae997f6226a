"""Training: preprocessing from the training split only, determinism, agreement with scikit-learn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from lifelines import CoxPHFitter
from sklearn.linear_model import LogisticRegression

from genesig.artifact.model import apply_preprocessing
from genesig.pipeline.metrics import c_index
from genesig.pipeline.mlp import cox_loss
from genesig.pipeline.model import cox_loss_grad, fit_preprocessing, train
from genesig.pipeline.settings import TrainSettings


def data(seed: int = 0, n: int = 150, genes: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    raw = rng.gamma(0.9, 6.0, size=(n, genes))
    raw[rng.random(raw.shape) < 0.1] = 0.0
    z = apply_preprocessing(fit_preprocessing(raw), [f"G{i}" for i in range(genes)], raw)
    eta = 1.2 * z[:, 0] - 0.8 * z[:, 2]
    event = rng.random(n) < 1 / (1 + np.exp(-(eta - 0.6)))
    time = rng.exponential(1 / np.exp(eta))
    return z, event, time


def test_preprocessing_is_log1p_then_standardised() -> None:
    raw = np.array([[0.0, 5.0], [3.0, 5.0], [8.0, 5.0]])
    prep = fit_preprocessing(raw)
    z = apply_preprocessing(prep, ["A", "B"], raw)
    np.testing.assert_allclose(z[:, 0].mean(), 0, atol=1e-12)
    np.testing.assert_allclose(z[:, 0].std(), 1, atol=1e-12)
    assert prep.scale[1] == 1.0 and np.allclose(z[:, 1], 0, atol=1e-12), "a constant gene stays finite"


def test_logistic_model_matches_scikit_learn() -> None:
    z, event, _ = data()
    l2 = 0.05
    weights = train(z, event, None, "binary", TrainSettings(l2=l2))
    # scikit-learn minimises C * sum(loss) + ||w||^2 / 2, i.e. mean(loss) + ||w||^2 / (2 C n).
    reference = LogisticRegression(C=1 / (l2 * len(z)), tol=1e-10, max_iter=10_000).fit(z, event)
    np.testing.assert_allclose(weights["linear.weight"][0], reference.coef_[0], atol=1e-4)
    np.testing.assert_allclose(weights["linear.bias"], reference.intercept_, atol=1e-4)


def test_training_is_deterministic() -> None:
    z, event, time = data(1)
    for config in (TrainSettings(), TrainSettings(model="mlp", hidden_units=8, seed=3)):
        a = train(z, event, None, "binary", config)
        b = train(z, event, None, "binary", config)
        assert all(np.array_equal(a[k], b[k]) for k in a)


def test_cox_model_recovers_the_direction_of_the_effect() -> None:
    z, event, time = data(2, n=300)
    weights = train(z, event, time, "time_to_event", TrainSettings(l2=0.01))
    w = weights["linear.weight"][0]
    assert w[0] > 0.5 and w[2] < -0.3 and abs(w[1]) < 0.3
    assert c_index(time=time, event=event, risk_score=z @ w) > 0.65


def test_cox_loss_and_gradient_equal_autograd_with_tied_times() -> None:
    rng = np.random.default_rng(4)
    eta = rng.normal(size=40) * 3
    time = rng.integers(1, 8, size=40).astype(float)  # many ties
    event = rng.random(40) < 0.6
    loss, grad = cox_loss_grad(eta, time, event)
    eta_t = torch.tensor(eta, requires_grad=True)
    reference = cox_loss(eta_t, time, event)
    reference.backward()  # type: ignore[no-untyped-call]
    assert loss == pytest.approx(reference.item(), rel=1e-12)
    assert eta_t.grad is not None
    np.testing.assert_allclose(grad, eta_t.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_unpenalised_cox_model_matches_lifelines() -> None:
    z, event, time = data(5, n=300)
    weights = train(z, event, time, "time_to_event", TrainSettings(l2=0.0))
    frame = pd.DataFrame(z, columns=[f"G{i}" for i in range(z.shape[1])]).assign(T=time, E=event.astype(int))
    reference = CoxPHFitter(penalizer=0.0).fit(frame, duration_col="T", event_col="E", fit_options={"precision": 1e-12})
    np.testing.assert_allclose(weights["linear.weight"][0], reference.params_.to_numpy(), atol=1e-6)
    assert weights["linear.bias"][0] == 0.0


def test_mlp_shapes() -> None:
    z, event, _ = data(3)
    weights = train(z, event, None, "binary", TrainSettings(model="mlp", hidden_units=12))
    assert weights["hidden.weight"].shape == (12, 5) and weights["output.weight"].shape == (1, 12)


def test_time_to_event_needs_time() -> None:
    z, event, _ = data()
    with pytest.raises(Exception, match="needs a time column"):
        train(z, event, None, "time_to_event", TrainSettings())
