"""Cross-validation on the training split: the repeated stratified outer CV that estimates a model's metric, and the
ridge penalty chosen by an inner CV nested inside it, for one design or a batch of designs on the same folds.

When the penalty is not fixed (``TrainSettings.l2`` is None), each outer fold chooses its own from ``L2_GRID`` by a
stratified ``INNER_FOLDS``-fold CV (held-out log-likelihood) on that fold's fitting rows only, so the outer fold's
score never saw the data that chose its penalty (the reported metric stays honest). The shipped model gets its
penalty the same way, from an inner CV on the whole training split. Inner fits go down the grid from the largest
penalty, each starting from the last one's weights (a warm start: ridge solutions move smoothly with the penalty)
and stopping at a looser tolerance, since only the ranking of the candidates is wanted. The cost is
``INNER_FOLDS x len(L2_GRID)`` extra fits per outer fold.

Besides the mean of the per-fold metrics (the gate's threshold is on it), each repeat's out-of-fold scores are
pooled over all its folds and scored once: the pooled out-of-fold metric ("cross-validated risk scores", Simon et
al., Brief Bioinform 2011; pre-validation, Tibshirani and Efron 2002). A fold of 30 patients gives a noisy metric
and a mean of five of them is noisier than one metric over all the patients, so the gate's tests compare this one
(``genesig.pipeline.significance``).

**A batch of designs.** :func:`cross_validate_designs` runs the same procedure on several designs (patients x
genes each) that share the outcome and so the folds: the signature's own values, the same values with the patients'
rows permuted (the self-contained test's null), or random gene sets of one size (the competitive test's). Every fit
of every fold and design is one problem of one batched Newton solve (``genesig.pipeline.model.fit_linear``): the
whole CV of a small signature costs a few hundred numpy calls, however many designs ride along. A design's results
do not depend on what else is in its batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
from sklearn.model_selection import RepeatedStratifiedKFold, StratifiedKFold

from genesig.artifact import (
    SCHEMA_VERSION,
    Manifest,
    Output,
    Preprocessing,
    RiskGroups,
    Signature,
    SignatureModel,
    TrainingData,
)
from genesig.artifact.manifest import TargetKind
from genesig.pipeline.metrics import discrimination_by_column
from genesig.pipeline.model import LinearProblems, fit_linear, log_likelihoods, standardisation, train
from genesig.pipeline.settings import L2_GRID, TrainSettings

INNER_FOLDS = 3
# Inner fits only rank candidates: they stop at a looser Newton decrement than the shipped and outer-fold fits.
INNER_TOLERANCE = 1e-8
# About how many bytes one batched solve may hold (values, curvature and, with more genes than patients, the
# patients' Gram matrices); larger batches are solved in chunks.
BATCH_BYTES = 96 * 2**20

Rows = np.ndarray
Split = tuple[Rows, Rows]  # (fitting rows, scored rows), positions in the training split


@dataclass(frozen=True)
class PenaltyChoice:
    """The penalty a model was fitted with and how it was chosen (the inner CV's held-out log-likelihood per
    candidate)."""

    l2: float
    chosen_by: Literal["fixed", "inner_cv"]
    candidates: tuple[float, ...] = ()
    inner_log_likelihood: tuple[float, ...] = ()
    inner_folds: int = 0  # INNER_FOLDS, or fewer when the smaller class has fewer patients


@dataclass(frozen=True)
class CrossValidation:
    metric: str
    folds: int
    repeats: int
    values: list[float]
    # The penalty each outer fold chose (all equal to the fixed one when --l2 is given).
    penalties: list[float]
    # Per repeat: the metric of the out-of-fold scores of every patient, pooled over that repeat's folds.
    pooled: list[float]
    # The pooled metric of each permutation of the patients' rows against the outcome cross-validated with it (this
    # signature's share of the self-contained null; see ``genesig.pipeline.significance``).
    permuted: list[float] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def pooled_mean(self) -> float:
        """The pooled out-of-fold metric, averaged over the repeats."""
        return float(np.mean(self.pooled))

    @property
    def interval(self) -> tuple[float, float]:
        """The 2.5th and 97.5th percentiles of the per-fold metric."""
        low, high = np.percentile(self.values, [2.5, 97.5])
        return float(low), float(high)


def metric_name(target: TargetKind) -> str:
    return "auc" if target == "binary" else "c_index"


def output_spec(target: TargetKind, cutpoints: list[float]) -> Output:
    if target == "binary":
        return Output(
            name="probability",
            description="probability of the event (death); the model is a logistic model on the signature's genes",
            risk_groups=RiskGroups(cutpoints=cutpoints, labels=["low", "high"]),
        )
    return Output(
        name="risk_score",
        description="Cox linear predictor (log relative hazard); higher means higher risk",
        risk_groups=RiskGroups(cutpoints=cutpoints, labels=["low", "high"]),
    )


def manifest_stub(
    genes: list[str], target: TargetKind, preprocessing: Preprocessing, config: TrainSettings
) -> Manifest:
    """Enough of a manifest to evaluate weights with the serving code during cross-validation."""
    return Manifest(
        schema_version=SCHEMA_VERSION,
        name="cv",
        version=1,
        signature=Signature(name="cv", genes_requested=genes),
        genes=genes,
        id_column="id",
        target=target,
        model=config.architecture(),
        preprocessing=preprocessing,
        output=output_spec(target, [0.0] if target == "time_to_event" else [0.5]),
        metrics={},
        training_data=TrainingData(fingerprint="", n_rows=1, n_events=0, event_column="event"),
        created_at="",
        versions={},
    )


def _folds(event: np.ndarray, wanted: int) -> int:
    """As many folds as asked, but no more than the smaller class has patients (each fold needs both)."""
    n_minority = int(min(event.sum(), len(event) - event.sum()))
    return max(2, min(wanted, n_minority))


def inner_splits(rows: Rows, event: np.ndarray, seed: int) -> list[Split]:
    """The stratified inner folds over ``rows`` (positions), as positions."""
    splitter = StratifiedKFold(n_splits=_folds(event[rows], INNER_FOLDS), shuffle=True, random_state=seed)
    return [(rows[fit], rows[score]) for fit, score in splitter.split(rows, event[rows])]


@dataclass(frozen=True)
class FoldPlan:
    """The repeated stratified outer folds of the training split and, in each, the inner folds that choose its
    penalty. It depends on the outcome only, so every design of a batch is cross-validated on the same folds."""

    folds: int
    repeats: int
    outer: list[Split]
    inner: list[list[Split]]


def plan_folds(event: np.ndarray, config: TrainSettings, seed: int) -> FoldPlan:
    folds = _folds(event, config.cv_folds)
    splitter = RepeatedStratifiedKFold(n_splits=folds, n_repeats=config.cv_repeats, random_state=seed)
    outer = list(splitter.split(np.zeros(len(event)), event))
    inner = [inner_splits(fit, event, seed + f) for f, (fit, _) in enumerate(outer)] if config.l2 is None else []
    return FoldPlan(folds, config.cv_repeats, outer, inner)


@dataclass(frozen=True)
class _Batch:
    """Problems of some designs (design-major: the fitting sets of each design in turn), ready for the solver, and
    what it takes to score every patient afterwards (each problem's standardisation)."""

    designs: np.ndarray  # the designs of the batch, in order
    sets: list[int]  # the fitting sets each design has in the batch, in order
    problems: LinearProblems
    center: np.ndarray  # problems x genes
    scale: np.ndarray


class _Designs:
    """A batch of designs (designs x patients x genes) on one outcome, fitted per problem (one fitting set of one
    design: its rows gathered and standardised) and scored on every patient."""

    def __init__(
        self,
        raw: np.ndarray,
        event: np.ndarray,
        time: np.ndarray | None,
        target: TargetKind,
        config: TrainSettings,
        log1p: bool,
    ) -> None:
        self.logged = np.log1p(raw) if log1p else np.asarray(raw, dtype=np.float64)
        # The time column only matters to a time-to-event target (a cohort with times may be fitted on status).
        self.time = time if target == "time_to_event" else None
        self.event, self.target, self.config = event, target, config
        self.count, self.n, self.k = self.logged.shape

    def batches(self, fit_sets: list[Rows], l2: np.ndarray | float) -> Iterator[_Batch]:
        """Every (design, fitting set) problem with its penalty (``l2``: fitting sets x designs, or one value), in
        batches of whole designs small enough for ``BATCH_BYTES`` (a design too large alone is split by fitting
        sets), so that how a design is batched never depends on the other designs."""
        rows = max(len(r) for r in fit_sets)
        per_problem = 8 * rows * (4 * (self.k + 1) + (3 * rows if self.k > rows else 0))
        per_design = per_problem * len(fit_sets)
        penalties = np.broadcast_to(np.asarray(l2, dtype=np.float64), (len(fit_sets), self.count))
        if per_design <= BATCH_BYTES:
            step = max(1, BATCH_BYTES // per_design)
            for first in range(0, self.count, step):
                designs = np.arange(first, min(first + step, self.count))
                yield self._batch(designs, list(range(len(fit_sets))), fit_sets, penalties, rows)
            return
        step = max(1, BATCH_BYTES // per_problem)
        for b in range(self.count):
            for first in range(0, len(fit_sets), step):
                sets = list(range(first, min(first + step, len(fit_sets))))
                yield self._batch(np.array([b]), sets, fit_sets, penalties, rows)

    def _batch(
        self, designs: np.ndarray, sets: list[int], fit_sets: list[Rows], penalties: np.ndarray, rows: int
    ) -> _Batch:
        count = len(designs) * len(sets)
        z = np.zeros((count, rows, self.k))
        mask = np.zeros((count, rows), dtype=bool)
        event = np.zeros((count, rows), dtype=bool)
        time = None if self.time is None else np.zeros((count, rows))
        center, scale = np.empty((count, self.k)), np.empty((count, self.k))
        l2 = np.empty(count)
        for j, s in enumerate(sets):
            fit = fit_sets[s]
            block = slice(j, count, len(sets))  # problem d * len(sets) + j for each design d
            values = self.logged[designs][:, fit]
            center[block], scale[block] = standardisation(values)
            z[block, : len(fit)] = (values - center[block][:, None, :]) / scale[block][:, None, :]
            mask[block, : len(fit)] = True
            event[block, : len(fit)] = self.event[fit]
            if time is not None and self.time is not None:
                time[block, : len(fit)] = self.time[fit]
            l2[block] = penalties[s, designs]
        return _Batch(designs, sets, LinearProblems(z, event, time, mask, l2), center, scale)

    def fit(self, batch: _Batch, start: np.ndarray | None, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
        """Each problem fitted with its penalty; returns its parameters (for a warm start) and its linear predictor
        of every patient (problems x patients)."""
        problems = batch.problems
        if self.config.model == "linear":
            theta = fit_linear(problems, start=start, tolerance=tolerance, max_iter=self.config.max_iter)
            # Every patient scored with the problem's standardisation: z w + b = logged (w / scale) - centre . (w /
            # scale) + b, one matrix product per design.
            v = theta[:, : self.k] / batch.scale
            offset = -np.sum(batch.center * v, axis=1) + (theta[:, self.k] if self.target == "binary" else 0.0)
            per_design = v.reshape(len(batch.designs), len(batch.sets), self.k)
            eta = np.matmul(self.logged[batch.designs], np.swapaxes(per_design, 1, 2))  # designs x patients x sets
            return theta, np.swapaxes(eta, 1, 2).reshape(len(theta), self.n) + offset[:, None]
        # The hidden-layer model: one problem at a time (torch), scored by the serving code.
        eta = np.empty((len(problems.z), self.n))
        for p in range(len(problems.z)):
            rows = problems.mask[p]
            time = None if problems.time is None else problems.time[p][rows]
            weights = train(
                problems.z[p][rows], problems.event[p][rows], time, self.target, self.config, l2=float(problems.l2[p])
            )
            preprocessing = Preprocessing(log1p=False, center=batch.center[p].tolist(), scale=batch.scale[p].tolist())
            stub = manifest_stub([f"g{j}" for j in range(self.k)], self.target, preprocessing, self.config)
            eta[p] = SignatureModel(stub, weights).linear_predictor(self.logged[batch.designs[p // len(batch.sets)]])
        return np.empty((len(eta), 0)), eta


def _choose_penalties(designs: _Designs, fit_sets: list[Rows], inner: list[list[Split]]) -> np.ndarray:
    """The inner CV of each fitting set (the rows it splits) of each design: the held-out log-likelihood of every
    candidate of ``L2_GRID``, summed over the inner folds (fitting sets x designs x candidates, descending
    penalties). Bernoulli on the held-out patients (binary); for Cox, the cross-validated partial likelihood of
    Verweij and van Houwelingen (1993): the log partial likelihood of all the set's rows minus that of the inner
    fold's fitting rows, both at the inner fold's weights (a fold's patients alone are too few risk sets)."""
    descending = np.array(sorted(L2_GRID, reverse=True))
    flat = [(s, fit, score) for s, splits in enumerate(inner) for fit, score in splits]
    totals = np.zeros((len(fit_sets), designs.count, len(descending)))
    for batch in designs.batches([fit for _, fit, _ in flat], descending[0]):
        count = len(batch.problems.z)
        owner = np.tile([flat[s][0] for s in batch.sets], len(batch.designs))
        design = np.repeat(batch.designs, len(batch.sets))
        scored = np.zeros((count, designs.n), dtype=bool)
        fitted = np.zeros((count, designs.n), dtype=bool)
        whole = np.zeros((count, designs.n), dtype=bool)
        for j, s in enumerate(batch.sets):
            block = slice(j, count, len(batch.sets))
            scored[block, flat[s][2]] = True
            fitted[block, flat[s][1]] = True
            whole[block, fit_sets[flat[s][0]]] = True
        outcome = np.broadcast_to(designs.event, (count, designs.n))
        times = None if designs.time is None else np.broadcast_to(designs.time, (count, designs.n))
        start: np.ndarray | None = None
        for c, l2 in enumerate(descending):  # down the grid, each fit starting from the previous penalty's
            at_l2 = replace(batch, problems=replace(batch.problems, l2=np.full(count, l2)))
            theta, eta = designs.fit(at_l2, start, INNER_TOLERANCE)
            start = theta if designs.config.model == "linear" else None
            if times is None:
                held_out = log_likelihoods(eta, outcome, None, scored)
            else:
                held_out = log_likelihoods(eta, outcome, times, whole) - log_likelihoods(eta, outcome, times, fitted)
            np.add.at(totals, (owner, design, np.full(count, c)), held_out)
    return totals


def _best(totals: np.ndarray) -> np.ndarray:
    """The chosen penalty of each row of totals (descending candidates): the first maximum, i.e. the largest penalty
    among equals (the simpler model)."""
    descending = np.array(sorted(L2_GRID, reverse=True))
    return np.asarray(descending[np.argmax(totals, axis=-1)])


def choose_penalty(
    raw: np.ndarray,
    event: np.ndarray,
    time: np.ndarray | None,
    target: TargetKind,
    config: TrainSettings,
    seed: int,
    *,
    log1p: bool = True,
) -> PenaltyChoice:
    """The fixed penalty when one is given; else the grid's best by a stratified inner CV on these rows alone
    (held-out log-likelihood: a likelihood, unlike a rank metric, also sees over-confident predictions, and the
    ridge's shrinkage is what it tunes). Ties go to the larger penalty, the simpler model."""
    if config.l2 is not None:
        return PenaltyChoice(config.l2, "fixed")
    rows = np.arange(len(event))
    splits = inner_splits(rows, event, seed)
    designs = _Designs(np.asarray(raw, dtype=np.float64)[None], event, time, target, config, log1p)
    totals = _choose_penalties(designs, [rows], [splits])[0, 0]
    ascending = np.argsort(sorted(L2_GRID, reverse=True))
    descending = sorted(L2_GRID, reverse=True)
    return PenaltyChoice(
        l2=float(_best(totals)),
        chosen_by="inner_cv",
        candidates=tuple(float(descending[i]) for i in ascending),
        inner_log_likelihood=tuple(float(totals[i]) for i in ascending),
        inner_folds=len(splits),
    )


def cross_validate_designs(
    raw: np.ndarray,
    event: np.ndarray,
    time: np.ndarray | None,
    target: TargetKind,
    config: TrainSettings,
    seed: int,
    *,
    log1p: bool = True,
) -> list[CrossValidation]:
    """Repeated stratified k-fold over these rows (the training split; the held-out split is never touched) for each
    design of ``raw`` (designs x patients x genes), all on the same folds: in each fold the preprocessing, the
    penalty (nested inner CV) and the model are fitted on one side and scored on the other."""
    raw = np.asarray(raw, dtype=np.float64)
    plan = plan_folds(event, config, seed)
    designs = _Designs(raw, event, time, target, config, log1p)
    fit_sets = [fit for fit, _ in plan.outer]
    if config.l2 is None:
        chosen = _best(_choose_penalties(designs, fit_sets, plan.inner))  # fitting sets x designs
    else:
        chosen = np.full((len(fit_sets), designs.count), float(config.l2))
    values = np.empty((len(fit_sets), designs.count))
    out_of_fold = np.empty((plan.repeats, designs.count, designs.n))
    for batch in designs.batches(fit_sets, chosen):
        _, eta = designs.fit(batch, None, 1e-14)
        for p, (b, f) in enumerate((b, f) for b in batch.designs for f in batch.sets):
            score_rows = plan.outer[f][1]
            out_of_fold[f // plan.folds, b, score_rows] = eta[p, score_rows]
    time = designs.time
    for f, (_, score_rows) in enumerate(plan.outer):
        fold_time = None if time is None else time[score_rows]
        scores = out_of_fold[f // plan.folds][:, score_rows]
        values[f] = discrimination_by_column(event=event[score_rows], time=fold_time, values=scores.T)
    pooled = np.stack([discrimination_by_column(event=event, time=time, values=r.T) for r in out_of_fold])
    metric = metric_name(target)
    return [
        CrossValidation(
            metric, plan.folds, plan.repeats, values[:, b].tolist(), chosen[:, b].tolist(), pooled[:, b].tolist()
        )
        for b in range(designs.count)
    ]


# Designs (patients x genes, each a row order of the same values) stacked at once by ``cross_validate_rows``.
ROWS_BYTES = 4 * BATCH_BYTES


def cross_validate_rows(
    raw: np.ndarray,
    rows: np.ndarray,
    event: np.ndarray,
    time: np.ndarray | None,
    target: TargetKind,
    config: TrainSettings,
    seed: int,
    *,
    log1p: bool = True,
) -> list[CrossValidation]:
    """:func:`cross_validate_designs` of ``raw`` (patients x genes) with its rows taken in each order of ``rows``
    (orders x patients) against the same outcome: the permutations of the self-contained test. The designs are
    stacked a few at a time (``ROWS_BYTES``), so that a large signature's hundreds of permutations never sit in
    memory together; the results do not depend on how they are grouped."""
    raw = np.asarray(raw, dtype=np.float64)
    per = max(1, ROWS_BYTES // max(raw.nbytes, 1))
    out: list[CrossValidation] = []
    for start in range(0, len(rows), per):
        out += cross_validate_designs(raw[rows[start : start + per]], event, time, target, config, seed, log1p=log1p)
    return out


def cross_validate_design(
    raw: np.ndarray,
    event: np.ndarray,
    time: np.ndarray | None,
    target: TargetKind,
    config: TrainSettings,
    seed: int,
    *,
    log1p: bool = True,
) -> CrossValidation:
    """:func:`cross_validate_designs` of one design."""
    return cross_validate_designs(
        np.asarray(raw, dtype=np.float64)[None], event, time, target, config, seed, log1p=log1p
    )[0]

