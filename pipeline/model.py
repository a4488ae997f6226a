"""Preprocessing fitted on the training split, and the penalised models trained with PyTorch.

Targets: binary status (logistic loss) or time-to-event (Cox partial likelihood, Breslow
ties). Models: a ridge-penalised linear model (default) or one hidden layer. Both are fitted
full-batch with L-BFGS in float64 on the CPU, so the same data gives the same weights:
the linear model with SciPy's L-BFGS-B on a closed-form numpy loss and gradient (the
problem is strictly convex and small; torch's per-call overhead made it ~20x slower),
the hidden-layer model with ``torch.optim.LBFGS`` and autograd from a fixed seed
(``genesig.pipeline.mlp``; torch is imported only then).
Serving evaluates the exported weights with numpy (``genesig.artifact.model``); the
predictions used for evaluation come from that same code path.
"""

from __future__ import annotations

import numpy as np
import scipy.optimize
import scipy.special

from genesig.artifact import Preprocessing
from genesig.artifact.manifest import TargetKind
from genesig.errors import DataError
from genesig.pipeline.settings import TrainSettings


def fit_preprocessing(raw: np.ndarray) -> Preprocessing:
    """log1p, then centre and scale each gene with the training split's mean and standard deviation."""
    logged = np.log1p(raw)
    center = logged.mean(axis=0)
    scale = logged.std(axis=0)
    scale = np.where(scale > 1e-8, scale, 1.0)  # a constant gene carries no signal; keep it finite
    return Preprocessing(log1p=True, center=center.tolist(), scale=scale.tolist())


def breslow_risk_index(time: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order by time descending, and for each position the last position of its tie group (its risk set end)."""
    order = np.argsort(-time, kind="stable")
    sorted_time = time[order]
    last = np.empty(len(time), dtype=np.int64)
    end = len(time) - 1
    for i in range(len(time) - 1, -1, -1):
        if i < len(time) - 1 and sorted_time[i] != sorted_time[i + 1]:
            end = i
        last[i] = end
    return order, last


def _logistic_loss_grad(eta: np.ndarray, event: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean binary cross-entropy on logits, and its gradient with respect to the logits."""
    loss = float(np.mean(np.logaddexp(0.0, eta) - event * eta))
    return loss, (scipy.special.expit(eta) - event) / len(eta)


def cox_loss_grad(eta: np.ndarray, time: np.ndarray, event: np.ndarray) -> tuple[float, np.ndarray]:
    """Negative Cox log partial likelihood per event (Breslow ties), and its gradient with respect to ``eta``.

    In descending-time order the risk set of position i is positions 0..last[i]; patient k
    is in the risk set of every event whose ``last`` is at or after k's position.
    """
    order, last = breslow_risk_index(time)
    e = eta[order]
    shift = e.max()
    cum = np.cumsum(np.exp(e - shift))
    events = event[order].astype(bool)
    n_events = max(int(events.sum()), 1)
    log_risk = np.log(cum[last]) + shift
    loss = -float(np.sum(e[events] - log_risk[events])) / n_events
    inverse_risk = np.bincount(last[events], weights=1.0 / cum[last[events]], minlength=len(e))
    share = np.exp(e - shift) * np.cumsum(inverse_risk[::-1])[::-1]
    grad_sorted = -(events - share) / n_events
    grad = np.empty_like(grad_sorted)
    grad[order] = grad_sorted
    return loss, grad


def _train_linear(
    z: np.ndarray, event: np.ndarray, time: np.ndarray | None, target: TargetKind, config: TrainSettings
) -> dict[str, np.ndarray]:
    """Ridge logistic or Cox regression; the Cox bias stays 0 (the partial likelihood ignores a shift)."""
    n_genes = z.shape[1]
    y = event.astype(np.float64)

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:n_genes], theta[n_genes]
        eta = z @ w + b
        if target == "binary":
            loss, d_eta = _logistic_loss_grad(eta, y)
        else:
            assert time is not None
            loss, d_eta = cox_loss_grad(eta, time, event)
        grad = np.empty_like(theta)
        grad[:n_genes] = z.T @ d_eta + config.l2 * w
        grad[n_genes] = d_eta.sum() if target == "binary" else 0.0
        return loss + config.l2 * float(w @ w) / 2, grad

    fit = scipy.optimize.minimize(
        objective,
        np.zeros(n_genes + 1),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": config.max_iter, "gtol": 1e-10, "ftol": 1e-15},
    )
    return {"linear.weight": fit.x[None, :n_genes].copy(), "linear.bias": fit.x[n_genes:].copy()}


def train(
    z: np.ndarray, event: np.ndarray, time: np.ndarray | None, target: TargetKind, config: TrainSettings
) -> dict[str, np.ndarray]:
    """Fit on preprocessed values ``z``; returns the weights named like the artifact expects."""
    if target == "time_to_event" and time is None:
        raise DataError("a time-to-event model needs a time column")
    if config.model == "linear":
        state = _train_linear(z, event, time, target, config)
    else:
        from genesig.pipeline.mlp import train_mlp  # torch: imported only when a hidden-layer model is asked for

        state = train_mlp(z, event, time, target, config)
    if not all(np.isfinite(v).all() for v in state.values()):
        raise DataError("training diverged (non-finite weights); try a larger --l2")
    return state
