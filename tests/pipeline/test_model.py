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
from genesig.pipeline.model import CoxLoss, breslow_risk_index, cox_loss_grad, fit_preprocessing, train
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
    for config in (TrainSettings(l2=0.1), TrainSettings(model="mlp", hidden_units=8, seed=3, l2=0.1)):
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
    weights = train(z, event, None, "binary", TrainSettings(model="mlp", hidden_units=12, l2=0.1))
    assert weights["hidden.weight"].shape == (12, 5) and weights["output.weight"].shape == (1, 12)


def test_time_to_event_needs_time() -> None:
    z, event, _ = data()
    with pytest.raises(Exception, match="needs a time column"):
        train(z, event, None, "time_to_event", TrainSettings())


def test_cox_curvature_equals_the_autograd_hessian_with_tied_times() -> None:
    rng = np.random.default_rng(7)
    eta = rng.normal(size=30) * 2
    time = rng.integers(1, 6, size=30).astype(float)
    event = rng.random(30) < 0.6
    order, _ = breslow_risk_index(time)
    cox = CoxLoss(event[order][None], time[order][None], np.ones((1, 30), dtype=bool))
    curvature = cox.derivatives(eta[order][None]).curvature
    reference = torch.autograd.functional.hessian(  # type: ignore[no-untyped-call]
        lambda e: cox_loss(e, time[order], event[order]), torch.tensor(eta[order])
    )
    np.testing.assert_allclose(curvature(np.eye(30)[None])[0], reference.numpy(), atol=1e-12)


def objective_gradient(weights: dict[str, np.ndarray], z: np.ndarray, event: np.ndarray, time: np.ndarray | None,
                       l2: float) -> np.ndarray:  # fmt: skip
    """The gradient of the penalised objective at ``weights``, by autograd: zero at the optimum."""
    w = torch.tensor(weights["linear.weight"][0], requires_grad=True)
    b = torch.tensor(weights["linear.bias"], requires_grad=True)
    eta = torch.as_tensor(z) @ w + b
    if time is None:
        loss = torch.nn.functional.binary_cross_entropy_with_logits(eta, torch.as_tensor(event, dtype=torch.float64))
    else:
        loss = cox_loss(eta, time, event)
    (loss + l2 * (w**2).sum() / 2).backward()  # type: ignore[no-untyped-call]
    assert w.grad is not None and b.grad is not None
    return np.r_[w.grad.numpy(), b.grad.numpy() if time is None else []]


@pytest.mark.parametrize("target", ["binary", "time_to_event"])
@pytest.mark.parametrize("genes", [5, 400], ids=["fewer genes than patients", "more genes than patients"])
def test_the_fit_is_the_penalised_optimum(target: str, genes: int) -> None:
    """Both ways of solving the Newton system (genes <= patients, and through the patients' side) reach the optimum."""
    z, event, time = data(5, n=80, genes=genes)
    times = time if target == "time_to_event" else None
    for l2 in (0.01, 1.0):
        weights = train(z, event, times, target, TrainSettings(l2=l2))  # type: ignore[arg-type]
        assert np.abs(objective_gradient(weights, z, event, times, l2)).max() < 1e-7


def test_a_warm_start_reaches_the_same_optimum() -> None:
    z, event, time = data(6, n=80, genes=30)
    cold = train(z, event, time, "time_to_event", TrainSettings(l2=0.1))
    warm = train(z, event, time, "time_to_event", TrainSettings(l2=0.1), start=train(z, event, time, "time_to_event",
                 TrainSettings(l2=10.0)))  # fmt: skip
    np.testing.assert_allclose(warm["linear.weight"], cold["linear.weight"], atol=1e-7)


def test_an_unpenalised_fit_with_more_genes_than_patients_is_refused() -> None:
    z, event, time = data(1, n=40, genes=60)
    with pytest.raises(Exception, match="60 genes and 40 patients have no unique unpenalised fit"):
        train(z, event, time, "time_to_event", TrainSettings(l2=0.0))
