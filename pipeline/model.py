"""Preprocessing fitted on the training split, and the penalised models fitted to it.

Targets: binary status (logistic loss) or time-to-event (Cox partial likelihood, Breslow
ties). Models: a ridge-penalised linear model (default) or one hidden layer. Both are fitted
full-batch in float64 on the CPU, so the same data gives the same weights:
the linear model by damped Newton steps on a closed-form numpy loss, gradient and curvature
(the problem is strictly convex and small: a handful of exact steps, where L-BFGS-B took
tens of evaluations, each with SciPy's per-call overhead, and torch ~20x longer again),
the hidden-layer model with ``torch.optim.LBFGS`` and autograd from a fixed seed
(``genesig.pipeline.mlp``; torch is imported only then).

The linear solver fits a *batch* of problems at once: problem ``p`` has its own values ``z[p]`` (patients x genes),
its own fitting rows ``mask[p]`` and its own penalty, while the outcome is shared. Cross-validation is such a batch
(every fold, every penalty of the inner CV), and so are the permutations of the gate's self-contained test (the same
folds with the patients' expression rows permuted): one pass of numpy calls serves them all, where one fit at a time
spent most of its time in Python. Each problem's arithmetic is its own (stacked matrix products and per-row
reductions), so a problem fitted alone or in a batch gets the same bits.
Serving evaluates the exported weights with numpy (``genesig.artifact.model``); the
predictions used for evaluation come from that same code path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import scipy.special

from genesig.artifact import Preprocessing
from genesig.artifact.manifest import TargetKind
from genesig.errors import DataError
from genesig.pipeline.settings import TrainSettings

Curvature = Callable[[np.ndarray], np.ndarray]


class Derivatives(NamedTuple):
    """A loss at a linear predictor (problems x rows): its value per problem, its gradient in the predictor, its
    curvature as an operator (``B v``), and ``x' B x`` for a design ``x`` (problems x rows x columns)."""

    loss: np.ndarray
    gradient: np.ndarray
    curvature: Curvature
    hessian: Callable[[np.ndarray], np.ndarray]


def fit_preprocessing(raw: np.ndarray, log1p: bool = True) -> Preprocessing:
    """log1p (raw expression; not for values already on a log scale), then centre and scale each gene with the
    training split's mean and standard deviation."""
    logged = np.log1p(raw) if log1p else np.asarray(raw, dtype=np.float64)
    center, scale = standardisation(logged[None])
    return Preprocessing(log1p=log1p, center=center[0].tolist(), scale=scale[0].tolist())


def standardisation(logged: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each gene's mean and standard deviation over the rows of each design (designs x rows x genes); a constant
    gene carries no signal and keeps a scale of 1, so it stays finite."""
    center = logged.mean(axis=1)
    scale = logged.std(axis=1)
    return center, np.where(scale > 1e-8, scale, 1.0)


def breslow_risk_index(time: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order by time descending, and for each position the last position of its tie group (its risk set end)."""
    order = np.argsort(-time, kind="stable")
    ascending = -time[order]
    return order, np.searchsorted(ascending, ascending, side="right") - 1


def _tie_bounds(time: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each problem's rows sorted by time descending (padding rows last, each its own group), each row's tie
    group: its last position (the end of its risk set) and its first position."""
    count, rows = time.shape
    positions = np.broadcast_to(np.arange(rows), (count, rows))
    ends = np.ones((count, rows), dtype=bool)
    ends[:, :-1] = (time[:, :-1] != time[:, 1:]) | ~mask[:, :-1] | ~mask[:, 1:]
    last = np.minimum.accumulate(np.where(ends, positions, rows)[:, ::-1], axis=1)[:, ::-1]
    starts = np.ones((count, rows), dtype=bool)
    starts[:, 1:] = ends[:, :-1]
    first = np.maximum.accumulate(np.where(starts, positions, 0), axis=1)
    return last, first


def softplus(eta: np.ndarray) -> np.ndarray:
    """``log(1 + exp(eta))``, stable for any ``eta``; several times faster than ``np.logaddexp(0, eta)``, which
    handles two general arguments (the line search evaluates this on every problem's rows at every step)."""
    return np.maximum(eta, 0.0) + np.log1p(np.exp(-np.abs(eta)))


class BinaryLoss:
    """Mean binary cross-entropy of the logits ``eta`` (problems x rows) over each problem's rows (``mask``: the
    rows that are not padding): value, gradient and curvature (diagonal) in ``eta``."""

    def __init__(self, event: np.ndarray, mask: np.ndarray) -> None:
        self.y = np.asarray(event, dtype=np.float64)
        self.m = mask.astype(np.float64)
        self.n = np.maximum(self.m.sum(axis=1), 1.0)

    def log_likelihood(self, eta: np.ndarray) -> np.ndarray:
        """The Bernoulli log-likelihood summed over each problem's rows."""
        return np.sum(self.m * (self.y * eta - softplus(eta)), axis=1)

    def loss(self, eta: np.ndarray) -> np.ndarray:
        return -self.log_likelihood(eta) / self.n

    def derivatives(self, eta: np.ndarray, loss: np.ndarray | None = None) -> Derivatives:
        """At ``eta``; ``loss``: the loss there when already known (not computed again)."""
        p = scipy.special.expit(eta)
        weight = self.m * p * (1 - p) / self.n[:, None]

        def curvature(v: np.ndarray) -> np.ndarray:
            return weight[:, :, None] * v if v.ndim == 3 else weight * v

        def hessian(x: np.ndarray) -> np.ndarray:
            return np.matmul(np.swapaxes(x * weight[:, :, None], 1, 2), x)

        value = self.loss(eta) if loss is None else loss
        return Derivatives(value, self.m * (p - self.y) / self.n[:, None], curvature, hessian)


class CoxLoss:
    """Negative Cox log partial likelihood per event (Breslow ties) of the linear predictor ``eta`` (problems x rows,
    each problem's rows sorted by time descending, padding rows last and masked out): value, gradient and curvature
    in ``eta``.

    In that order the risk set of position i is positions 0..last[i]; patient j is in the risk set of every event
    whose ``last`` is at or after j's position, i.e. of every event from the first position of j's tie group on.
    With ``w = exp(eta)`` (0 on padding) and ``S_i`` the risk set's sum of ``w``, the curvature is
    ``(diag(share) - C'C) / events``, where ``C[i, j] = w_j / S_i`` over event i's risk set and ``share_j = w_j * sum
    of 1/S_i over the events whose risk set holds j`` (also in the gradient). ``C v`` is a running sum of ``w v``
    read at each event's ``last``; ``C' u`` a reversed running sum of ``u / S`` read at each patient's tie-group
    start: no patients-by-patients matrix is formed."""

    def __init__(self, event: np.ndarray, time: np.ndarray, mask: np.ndarray) -> None:
        self.m = mask.astype(np.float64)
        self.e = self.m * np.asarray(event, dtype=np.float64)
        self.events = self.e > 0
        self.n_events = np.maximum(self.e.sum(axis=1), 1.0)
        last, first = _tie_bounds(time, mask)
        count, rows = last.shape
        # Reading a running sum at each row's tie-group end (or start) is a gather; with no tied times it is the
        # identity and is skipped.
        self.tied = bool(np.any(last != np.arange(rows)))
        offsets = (np.arange(count) * rows)[:, None]
        self.last_flat, self.first_flat = (last + offsets).ravel(), (first + offsets).ravel()

    def _at(self, values: np.ndarray, flat: np.ndarray) -> np.ndarray:
        """``values`` (problems x rows [x columns]) read at each problem's own positions ``flat``."""
        if not self.tied:
            return values
        return values.reshape(len(flat), -1)[flat].reshape(values.shape)

    def _risk(self, eta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        shift = np.max(np.where(self.m > 0, eta, -np.inf), axis=1, keepdims=True)
        shift = np.where(np.isfinite(shift), shift, 0.0)
        w = self.m * np.exp(np.minimum(eta - shift, 0.0))
        risk_sum = self._at(np.cumsum(w, axis=1), self.last_flat)
        return w, np.where(self.events, risk_sum, 1.0), shift

    def log_likelihood(self, eta: np.ndarray) -> np.ndarray:
        """The log partial likelihood summed over each problem's events (0 for a problem without events)."""
        _, risk_sum, shift = self._risk(eta)
        return np.sum(self.e * (eta - np.log(risk_sum) - shift), axis=1)

    def loss(self, eta: np.ndarray) -> np.ndarray:
        return -self.log_likelihood(eta) / self.n_events

    def derivatives(self, eta: np.ndarray, known: np.ndarray | None = None) -> Derivatives:
        """At ``eta``; ``known``: the loss there when already known (not computed again)."""
        w, risk_sum, shift = self._risk(eta)
        loss = -np.sum(self.e * (eta - np.log(risk_sum) - shift), axis=1) / self.n_events if known is None else known
        inverse = self.e / risk_sum
        after = np.cumsum(inverse[:, ::-1], axis=1)[:, ::-1]
        share = w * self._at(after, self.first_flat)
        grad = -(self.e - share) / self.n_events[:, None]
        at, first, last, n_events = self._at, self.first_flat, self.last_flat, self.n_events

        def curvature(v: np.ndarray) -> np.ndarray:
            matrix = v.ndim == 3
            vv = v if matrix else v[:, :, None]
            running = np.cumsum(w[:, :, None] * vv, axis=1)
            back = at(running, last) * (inverse * inverse)[:, :, None]  # (C v) / S per event
            after_back = np.cumsum(back[:, ::-1], axis=1)[:, ::-1]
            ctcv = w[:, :, None] * at(after_back, first)
            out = (share[:, :, None] * vv - ctcv) / n_events[:, None, None]
            return out if matrix else out[:, :, 0]

        def hessian(x: np.ndarray) -> np.ndarray:
            # x' B x = (x' diag(share) x - sum over events of r r' / S^2) / events, r the running sum of w x at the
            # event's risk-set end: two stacked products, no second running sum.
            r = at(np.cumsum(w[:, :, None] * x, axis=1), last) * inverse[:, :, None]
            spread = np.matmul(np.swapaxes(x * share[:, :, None], 1, 2), x)
            return (spread - np.matmul(np.swapaxes(r, 1, 2), r)) / n_events[:, None, None]

        return Derivatives(loss, grad, curvature, hessian)


def sort_by_time(
    time: np.ndarray, mask: np.ndarray, *arrays: np.ndarray
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Each problem's rows (problems x rows) in descending time, padding rows last: time, mask and ``arrays`` (each
    problems x rows or problems x rows x columns) in that order."""
    order = np.argsort(np.where(mask, -time, np.inf), axis=1, kind="stable")

    def take(a: np.ndarray) -> np.ndarray:
        return np.take_along_axis(a, order[:, :, None] if a.ndim == 3 else order, axis=1)

    return take(time), take(mask), [take(a) for a in arrays]


def objective_of(
    event: np.ndarray, time: np.ndarray | None, mask: np.ndarray
) -> BinaryLoss | CoxLoss:
    """The loss of each problem (rows already in descending time for Cox: see :func:`sort_by_time`)."""
    return BinaryLoss(event, mask) if time is None else CoxLoss(event, time, mask)


def log_likelihood(eta: np.ndarray, event: np.ndarray, time: np.ndarray | None) -> float:
    """The log-likelihood of a linear predictor: Bernoulli (logits) without ``time``, Cox's log partial likelihood
    (Breslow ties) with it; summed over patients or events."""
    mask = np.ones((1, len(eta)), dtype=bool)
    return float(log_likelihoods(eta[None], event[None], None if time is None else time[None], mask)[0])


def log_likelihoods(eta: np.ndarray, event: np.ndarray, time: np.ndarray | None, mask: np.ndarray) -> np.ndarray:
    """:func:`log_likelihood` of each problem (problems x rows: linear predictor, outcome, which rows count)."""
    if time is None:
        return BinaryLoss(event, mask).log_likelihood(eta)
    time, mask, (event, eta) = sort_by_time(time, mask, event, eta)
    return CoxLoss(event, time, mask).log_likelihood(eta)


def cox_loss_grad(eta: np.ndarray, time: np.ndarray, event: np.ndarray) -> tuple[float, np.ndarray]:
    """Negative Cox log partial likelihood per event (Breslow ties), and its gradient with respect to ``eta``."""
    order, _ = breslow_risk_index(time)
    cox = CoxLoss(event[order][None], time[order][None], np.ones((1, len(eta)), dtype=bool))
    loss, grad_sorted, _, _ = cox.derivatives(eta[order][None])
    grad = np.empty(len(eta))
    grad[order] = grad_sorted[0]
    return float(loss[0]), grad


@dataclass(frozen=True)
class LinearProblems:
    """A batch of ridge fits with the same genes: each problem's standardised values ``z`` (problems x rows x genes),
    its outcome (``event``, and ``time`` for Cox: problems x rows), which rows are real (``mask``; the rest pad
    problems with fewer patients) and its penalty ``l2``."""

    z: np.ndarray
    event: np.ndarray
    time: np.ndarray | None
    mask: np.ndarray
    l2: np.ndarray


def fit_linear(
    problems: LinearProblems,
    *,
    start: np.ndarray | None = None,
    tolerance: float = 1e-14,
    max_iter: int = 200,
) -> np.ndarray:
    """Ridge logistic (no ``time``) or Cox regression of every problem by damped Newton steps; returns ``theta``
    (problems x (genes + 1 bias for logistic)). The Cox bias stays 0 (the partial likelihood ignores a shift), the
    logistic bias is not penalised.

    The objective is ``loss(X theta) + l2/2 |w|^2`` with ``X = [z, 1]`` for logistic and ``X = z`` for Cox. Its
    Hessian is ``X' B X + l2 P`` (``B`` the loss's curvature in the linear predictor, ``P`` the penalised
    coordinates): see ``_newton_steps`` for how it is solved with more genes than patients. Newton converges in a
    handful of steps on this strictly convex problem, each step exact; a problem stops when its Newton decrement (the
    predicted decrease) is below ``tolerance``, the others go on."""
    z, mask, l2 = problems.z, problems.mask, np.asarray(problems.l2, dtype=np.float64)
    count, rows, k = z.shape
    fitted = mask.sum(axis=1)
    bias = problems.time is None
    if np.any((l2 <= 0) & (k > fitted)):
        raise DataError(
            f"{k} genes and {int(fitted.min())} patients have no unique unpenalised fit: give --l2 a positive value"
        )
    event, time = problems.event, problems.time
    x = np.where(mask[:, :, None], z, 0.0)
    if time is not None:
        time, mask, (event, x) = sort_by_time(time, mask, event, x)
    theta = np.zeros((count, k + bias)) if start is None else np.array(start[:, : k + bias], dtype=np.float64)
    penalised = np.r_[np.ones(k), np.zeros(int(bias))]
    gram = np.matmul(x, np.swapaxes(x, 1, 2)) if k > rows else None

    def eta_of(t: np.ndarray, xs: np.ndarray) -> np.ndarray:
        eta = np.matmul(xs, t[:, :k, None])[:, :, 0]
        return eta + t[:, k:] if bias else eta

    # Each problem's linear predictor and loss at its current theta: the line search's accepted point is the next
    # step's start, so neither is computed twice.
    eta_now = eta_of(theta, x)
    loss_now = objective_of(event, time, mask).loss(eta_now)
    active = np.arange(count)
    for _ in range(max_iter):
        if not len(active):
            break
        every = len(active) == count  # no copies while every problem is still going
        pick = slice(None) if every else active
        xa, la, ta, eta_a = x[pick], l2[pick], theta[pick].copy(), eta_now[pick]
        objective = objective_of(event[pick], None if time is None else time[pick], mask[pick])
        loss, d_eta, curvature, form = objective.derivatives(eta_a, loss_now[pick])
        current = loss + la * np.sum(penalised * ta * ta, axis=1) / 2
        grad = la[:, None] * penalised * ta
        grad[:, :k] += np.matmul(d_eta[:, None, :], xa)[:, 0]
        if bias:
            grad[:, k] += d_eta.sum(axis=1)
        step = _newton_steps(xa, bias, curvature, form, la, grad, None if gram is None else gram[pick])
        decrement = np.sum(grad * step, axis=1)
        going = np.isfinite(decrement) & (decrement / 2 > tolerance)
        # Backtracking (Armijo) along each problem's Newton direction: only the problems still searching are
        # evaluated at each halving.
        scale = np.where(going, 1.0, 0.0)
        next_eta, next_loss = eta_a.copy(), loss.copy()
        pending = going.copy()
        while pending.any():
            idx = np.flatnonzero(pending)
            t = ta[idx] - scale[idx, None] * step[idx]
            eta_c = eta_of(t, xa[idx])
            loss_c = objective_of(
                event[pick][idx], None if time is None else time[pick][idx], mask[pick][idx]
            ).loss(eta_c)
            accepted = loss_c + la[idx] * np.sum(penalised * t * t, axis=1) / 2 <= (
                current[idx] - 1e-4 * scale[idx] * decrement[idx]
            )
            next_eta[idx[accepted]], next_loss[idx[accepted]] = eta_c[accepted], loss_c[accepted]
            pending[idx[accepted]] = False
            scale = np.where(pending, scale / 2, scale)
            if np.all(scale[pending] < 1e-10):
                break
        stuck = going & (scale < 1e-10)  # no decrease left along the Newton direction: converged to rounding
        moving = going & ~stuck
        moved = active[moving]
        theta[moved] = ta[moving] - scale[moving, None] * step[moving]
        eta_now[moved], loss_now[moved] = next_eta[moving], next_loss[moving]
        active = moved
    return theta


def _newton_steps(
    x: np.ndarray,
    bias: bool,
    curvature: Curvature,
    form: Callable[[np.ndarray], np.ndarray],
    l2: np.ndarray,
    grad: np.ndarray,
    gram: np.ndarray | None,
) -> np.ndarray:
    """Solve ``H step = grad`` for each problem, ``H = X' B X + l2 P``, ``X = [x, 1]`` with an unpenalised bias, else
    ``x``.

    Genes no more than patients: ``H`` is formed (``form``: ``x' B x``) and solved. More genes than patients
    (``gram = x x'``): the penalised block ``A = x' B x + l2 I`` is solved through the patients' side (Woodbury:
    ``A^-1 v = (v - x' (l2 I + B gram)^-1 B x v) / l2``, an n-by-n system) and the bias by block elimination."""
    count, n, k = x.shape
    if gram is None:
        xx = np.concatenate([x, np.ones((count, n, 1))], axis=2) if bias else x
        diagonal = np.r_[np.ones(k), 0.0] if bias else np.ones(k)
        hessian = form(xx) + l2[:, None, None] * np.diag(diagonal)
        try:
            return np.linalg.solve(hessian, grad[:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:  # singular: an unpenalised fit on collinear genes
            return np.stack([np.linalg.lstsq(h, g, rcond=None)[0] for h, g in zip(hessian, grad, strict=True)])
    system = l2[:, None, None] * np.eye(n) + curvature(gram)

    def solve_penalised(v: np.ndarray) -> np.ndarray:  # v: problems x genes x columns
        through = np.linalg.solve(system, curvature(np.matmul(x, v)))
        return (v - np.matmul(np.swapaxes(x, 1, 2), through)) / l2[:, None, None]

    if not bias:
        return solve_penalised(grad[:, :, None])[:, :, 0]
    ones = np.ones((count, n, 1))
    b_ones = curvature(ones)
    cross = np.matmul(np.swapaxes(x, 1, 2), b_ones)[:, :, 0]  # problems x genes
    corner = np.sum(b_ones[:, :, 0], axis=1)
    solved = solve_penalised(np.stack([grad[:, :k], cross], axis=2))
    solved_grad, solved_cross = solved[:, :, 0], solved[:, :, 1]
    step_bias = (grad[:, k] - np.sum(cross * solved_grad, axis=1)) / (corner - np.sum(cross * solved_cross, axis=1))
    return np.concatenate([solved_grad - solved_cross * step_bias[:, None], step_bias[:, None]], axis=1)


def weights_of(theta: np.ndarray, k: int, target: TargetKind) -> dict[str, np.ndarray]:
    """One problem's ``theta`` as the artifact's tensors."""
    bias = target == "binary"
    return {"linear.weight": theta[None, :k].copy(), "linear.bias": theta[k:].copy() if bias else np.zeros(1)}


def theta_of(weights: dict[str, np.ndarray], target: TargetKind) -> np.ndarray:
    """The artifact's linear tensors as one problem's ``theta``."""
    parts = [weights["linear.weight"][0]] + ([weights["linear.bias"]] if target == "binary" else [])
    return np.concatenate(parts)


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
    """Fit on preprocessed values ``z`` (every row); returns the weights named like the artifact expects.

    ``l2`` is the penalty (default ``config.l2``, which is None only when it is to be chosen: see
    ``genesig.pipeline.validation``). The linear model can start from ``start`` (the weights of a nearby penalty: a
    warm start along the penalty grid) and stop at a looser ``tolerance`` where only a ranking is wanted."""
    if target == "time_to_event" and time is None:
        raise DataError("a time-to-event model needs a time column")
    penalty = config.l2 if l2 is None else l2
    if penalty is None:
        raise ValueError("train needs a penalty: config.l2 or l2=")
    if config.model == "linear":
        problems = LinearProblems(
            z[None], np.asarray(event)[None], None if target == "binary" else np.asarray(time)[None],
            np.ones((1, len(z)), dtype=bool), np.array([penalty]),
        )  # fmt: skip
        first = None if start is None else theta_of(start, target)[None]
        theta = fit_linear(problems, start=first, tolerance=tolerance, max_iter=config.max_iter)
        state = weights_of(theta[0], z.shape[1], target)
    else:
        from genesig.pipeline.mlp import train_mlp  # torch: imported only when a hidden-layer model is asked for

        state = train_mlp(z, event, time, target, config, penalty)
    if not all(np.isfinite(v).all() for v in state.values()):
        raise DataError("training diverged (non-finite weights); try a larger --l2")
    return state
