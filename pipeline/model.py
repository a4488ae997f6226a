"""Preprocessing fitted on the training split, and the penalised models fitted to it.

Targets: binary status (logistic loss) or time-to-event (Cox partial likelihood, Breslow
ties). Models: a ridge-penalised linear model (default) or one hidden layer. Both are fitted
full-batch in float64 on the CPU, so the same data gives the same weights:
the linear model by damped Newton steps on a closed-form numpy loss, gradient and curvature
(the problem is strictly convex and small: a handful of exact steps, where L-BFGS-B took
tens of evaluations, each with SciPy's per-call overhead, and torch ~20x longer again),
the hidden-layer model with ``torch.optim.LBFGS`` and autograd from a fixed seed
(``genesig.pipeline.mlp``; torch is imported only then).
Serving evaluates the exported weights with numpy (``genesig.artifact.model``); the
predictions used for evaluation come from that same code path.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.linalg
import scipy.special

from genesig.artifact import Preprocessing
from genesig.artifact.manifest import TargetKind
from genesig.errors import DataError
from genesig.pipeline.settings import TrainSettings


def fit_preprocessing(raw: np.ndarray, log1p: bool = True) -> Preprocessing:
    """log1p (raw expression; not for values already on a log scale), then centre and scale each gene with the
    training split's mean and standard deviation."""
    logged = np.log1p(raw) if log1p else np.asarray(raw, dtype=np.float64)
    center = logged.mean(axis=0)
    scale = logged.std(axis=0)
    scale = np.where(scale > 1e-8, scale, 1.0)  # a constant gene carries no signal; keep it finite
    return Preprocessing(log1p=log1p, center=center.tolist(), scale=scale.tolist())


def breslow_risk_index(time: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order by time descending, and for each position the last position of its tie group (its risk set end)."""
    order = np.argsort(-time, kind="stable")
    ascending = -time[order]
    return order, np.searchsorted(ascending, ascending, side="right") - 1


class _Binary:
    """Mean binary cross-entropy on the logits ``eta``: value, gradient and curvature (diagonal) in ``eta``."""

    def __init__(self, event: np.ndarray) -> None:
        self.y = event.astype(np.float64)

    def loss(self, eta: np.ndarray) -> float:
        return float(np.mean(np.logaddexp(0.0, eta) - self.y * eta))

    def derivatives(self, eta: np.ndarray) -> tuple[float, np.ndarray, Callable[[np.ndarray], np.ndarray]]:
        p = scipy.special.expit(eta)
        weight = p * (1 - p) / len(eta)

        def curvature(v: np.ndarray) -> np.ndarray:
            return weight[:, None] * v if v.ndim == 2 else weight * v

        return self.loss(eta), (p - self.y) / len(eta), curvature


class _Cox:
    """Negative Cox log partial likelihood per event (Breslow ties) of the linear predictor ``eta``, its gradient and
    its curvature in ``eta``, all in the descending-time order of ``breslow_risk_index``.

    In that order the risk set of position i is positions 0..last[i]; patient j is in the risk set of every event
    whose ``last`` is at or after j's position. With ``w = exp(eta)`` and ``S_i`` the risk set's sum of ``w``, the
    curvature is ``(diag(share) - C'C) / events``, where ``C[i, j] = w_j / S_i`` over event i's risk set and
    ``share_j = w_j * sum of 1/S_i over the events whose risk set holds j`` (that share is also in the gradient).
    """

    def __init__(self, event_sorted: np.ndarray, last: np.ndarray) -> None:
        self.events = event_sorted.astype(bool)
        self.event_last = last[self.events]
        self.n_events = max(int(self.events.sum()), 1)
        self.last = last

    def _risk(self, eta: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        shift = float(eta.max())
        w = np.exp(eta - shift)
        return w, np.cumsum(w), shift

    def loss(self, eta: np.ndarray) -> float:
        _, cum, shift = self._risk(eta)
        log_risk = np.log(cum[self.event_last]) + shift
        return -float(np.sum(eta[self.events] - log_risk)) / self.n_events

    def derivatives(self, eta: np.ndarray) -> tuple[float, np.ndarray, Callable[[np.ndarray], np.ndarray]]:
        w, cum, shift = self._risk(eta)
        risk_sum = cum[self.event_last]
        loss = -float(np.sum(eta[self.events] - np.log(risk_sum) - shift)) / self.n_events
        inverse_risk = np.bincount(self.event_last, weights=1.0 / risk_sum, minlength=len(eta))
        share = w * np.cumsum(inverse_risk[::-1])[::-1]
        grad = -(self.events - share) / self.n_events
        in_risk_set = np.arange(len(eta))[None, :] <= self.event_last[:, None]
        c = np.where(in_risk_set, w[None, :] / risk_sum[:, None], 0.0)

        def curvature(v: np.ndarray) -> np.ndarray:
            diagonal = share[:, None] * v if v.ndim == 2 else share * v
            return (diagonal - c.T @ (c @ v)) / self.n_events

        return loss, grad, curvature


def cox_loss_grad(eta: np.ndarray, time: np.ndarray, event: np.ndarray) -> tuple[float, np.ndarray]:
    """Negative Cox log partial likelihood per event (Breslow ties), and its gradient with respect to ``eta``."""
    order, last = breslow_risk_index(time)
    loss, grad_sorted, _ = _Cox(event[order], last).derivatives(eta[order])
    grad = np.empty_like(grad_sorted)
    grad[order] = grad_sorted
    return loss, grad


def log_likelihood(eta: np.ndarray, event: np.ndarray, time: np.ndarray | None) -> float:
    """The log-likelihood of a linear predictor: Bernoulli (logits) without ``time``, Cox's log partial likelihood
    (Breslow ties) with it; summed over patients or events."""
    if time is None:
        return -_Binary(event).loss(eta) * len(eta)
    order, last = breslow_risk_index(time)
    cox = _Cox(event[order], last)
    return -cox.loss(eta[order]) * cox.n_events if event.any() else 0.0


def _train_linear(
    z: np.ndarray,
    event: np.ndarray,
    time: np.ndarray | None,
    target: TargetKind,
    l2: float,
    start: dict[str, np.ndarray] | None,
    tolerance: float,
    max_iter: int,
) -> dict[str, np.ndarray]:
    """Ridge logistic or Cox regression by damped Newton steps; the Cox bias stays 0 (the partial likelihood
    ignores a shift), the logistic bias is not penalised.

    The objective is ``loss(X theta) + l2/2 |w|^2`` with ``X = [z, 1]`` for logistic and ``X = z`` for Cox. Its
    Hessian is ``X' B X + l2 P`` (``B`` the loss's curvature in the linear predictor, ``P`` the penalised
    coordinates): see ``_newton_step`` for how it is solved with more genes than patients. Newton
    converges in a handful of steps on this strictly convex problem, each step exact; iteration stops when the
    Newton decrement (the predicted decrease) is below ``tolerance``.
    """
    n, k = z.shape
    bias = target == "binary"
    objective: _Binary | _Cox
    if bias:
        x, objective = z, _Binary(event)
    else:
        assert time is not None
        order, last = breslow_risk_index(time)
        x, objective = z[order], _Cox(event[order], last)
    if k > n and l2 <= 0:
        raise DataError(f"{k} genes and {n} patients have no unique unpenalised fit: give --l2 a positive value")
    gram = x @ x.T if k > n else None
    theta = np.zeros(k + bias)
    if start is not None:
        theta = np.concatenate([start["linear.weight"][0], start["linear.bias"]])[: k + bias]
    penalised = np.r_[np.ones(k), np.zeros(int(bias))]

    def eta_of(t: np.ndarray) -> np.ndarray:
        return x @ t[:k] + (t[k] if bias else 0.0)

    def value(t: np.ndarray) -> float:
        return objective.loss(eta_of(t)) + l2 * float(np.sum(penalised * t * t)) / 2

    for _ in range(max_iter):
        loss, d_eta, curvature = objective.derivatives(eta_of(theta))
        current = loss + l2 * float(np.sum(penalised * theta * theta)) / 2
        grad = l2 * penalised * theta
        grad[:k] += x.T @ d_eta
        if bias:
            grad[k] += d_eta.sum()
        step = _newton_step(x, bias, curvature, l2, grad, gram)
        decrement = float(grad @ step)
        if not np.isfinite(decrement) or decrement / 2 <= tolerance:
            break
        scale = 1.0
        while scale >= 1e-10 and not value(theta - scale * step) <= current - 1e-4 * scale * decrement:
            scale /= 2
        if scale < 1e-10:
            break  # no decrease left to find along the Newton direction: converged to rounding
        theta = theta - scale * step
    return {"linear.weight": theta[None, :k].copy(), "linear.bias": theta[k:].copy() if bias else np.zeros(1)}


def _newton_step(
    z: np.ndarray,
    bias: bool,
    curvature: Callable[[np.ndarray], np.ndarray],
    l2: float,
    grad: np.ndarray,
    gram: np.ndarray | None,
) -> np.ndarray:
    """Solve ``H step = grad`` for ``H = X' B X + l2 P``, ``X = [z, 1]`` with an unpenalised bias, else ``z``.

    Genes no more than patients: ``H`` is formed and solved. More genes than patients (``gram = z z'``): the
    penalised block ``A = z' B z + l2 I`` is solved through the patients' side (Woodbury:
    ``A^-1 v = (v - z' (l2 I + B gram)^-1 B z v) / l2``, an n-by-n system) and the bias by block elimination.
    """
    n, k = z.shape
    if gram is None:
        x = np.hstack([z, np.ones((n, 1))]) if bias else z
        hessian = x.T @ curvature(x) + l2 * np.diag(np.r_[np.ones(k), 0.0] if bias else np.ones(k))
        try:
            return np.linalg.solve(hessian, grad)
        except np.linalg.LinAlgError:  # singular: an unpenalised fit on collinear genes
            return np.asarray(np.linalg.lstsq(hessian, grad, rcond=None)[0])
    factors = scipy.linalg.lu_factor(l2 * np.eye(n) + curvature(gram))

    def solve_penalised(v: np.ndarray) -> np.ndarray:
        return np.asarray((v - z.T @ scipy.linalg.lu_solve(factors, curvature(z @ v))) / l2)

    if not bias:
        return solve_penalised(grad)
    ones = np.ones(n)
    cross = z.T @ curvature(ones)
    corner = float(ones @ curvature(ones))
    solved_grad, solved_cross = solve_penalised(grad[:k]), solve_penalised(cross)
    step_bias = (grad[k] - cross @ solved_grad) / (corner - cross @ solved_cross)
    return np.r_[solved_grad - solved_cross * step_bias, step_bias]


def train(
    z: np.ndarray,
    event: np.ndarray,
    time: np.ndarray | None,
    target: TargetKind,
    config: TrainSettings,
    *,
    l2: float | None = None,
    start: dict[str, np.ndarray] | None = None,
    tolerance: float = 1e-14,
) -> dict[str, np.ndarray]:
    """Fit on preprocessed values ``z``; returns the weights named like the artifact expects.

    ``l2`` is the penalty (default ``config.l2``, which is None only when it is to be chosen: see
    ``genesig.pipeline.tuning``). The linear model can start from ``start`` (the weights of a nearby penalty: a
    warm start along the penalty grid) and stop at a looser ``tolerance`` where only a ranking is wanted."""
    if target == "time_to_event" and time is None:
        raise DataError("a time-to-event model needs a time column")
    penalty = config.l2 if l2 is None else l2
    if penalty is None:
        raise ValueError("train needs a penalty: config.l2 or l2=")
    if config.model == "linear":
        state = _train_linear(z, event, time, target, penalty, start, tolerance, config.max_iter)
    else:
        from genesig.pipeline.mlp import train_mlp  # torch: imported only when a hidden-layer model is asked for

        state = train_mlp(z, event, time, target, config, penalty)
    if not all(np.isfinite(v).all() for v in state.values()):
        raise DataError("training diverged (non-finite weights); try a larger --l2")
    return state
