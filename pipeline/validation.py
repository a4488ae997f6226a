"""Cross-validation on the training split: the repeated stratified outer CV that estimates a model's metric, and the
ridge penalty chosen by an inner CV nested inside it.

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
and a mean of five of them is noisier than one metric over all the patients, so the random-signature null
compares this one (``genesig.pipeline.significance``).
"""

from __future__ import annotations

from dataclasses import dataclass
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
from genesig.artifact.model import apply_preprocessing
from genesig.pipeline.metrics import discrimination
from genesig.pipeline.model import fit_preprocessing, log_likelihood, train
from genesig.pipeline.settings import L2_GRID, TrainSettings

INNER_FOLDS = 3
# Inner fits only rank candidates: they stop at a looser Newton decrement than the shipped and outer-fold fits.
INNER_TOLERANCE = 1e-8


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


def choose_penalty(
    raw: np.ndarray,
    event: np.ndarray,
    time: np.ndarray | None,
    target: TargetKind,
    genes: list[str],
    config: TrainSettings,
    seed: int,
    *,
    log1p: bool = True,
) -> PenaltyChoice:
    """The fixed penalty when one is given; else the grid's best by a stratified inner CV on these rows alone.

    Candidates are compared on held-out log-likelihood, summed over the inner folds: Bernoulli on the held-out
    patients (binary); for Cox, the cross-validated partial likelihood of Verweij and van Houwelingen (1993), the
    log partial likelihood of all these rows minus that of the fitting rows, both at the fold's weights (a fold's
    patients alone are too few risk sets). A likelihood, unlike a rank metric, also sees over-confident
    predictions: the ridge's shrinkage is what it tunes. Ties go to the larger penalty, the simpler model."""
    if config.l2 is not None:
        return PenaltyChoice(config.l2, "fixed")
    descending = sorted(L2_GRID, reverse=True)
    totals = np.zeros(len(descending))
    splitter = StratifiedKFold(n_splits=_folds(event, INNER_FOLDS), shuffle=True, random_state=seed)
    for fit_rows, score_rows in splitter.split(raw, event):
        preprocessing = fit_preprocessing(raw[fit_rows], log1p)
        z = apply_preprocessing(preprocessing, genes, raw[fit_rows])
        stub = manifest_stub(genes, target, preprocessing, config)
        fit_time = None if time is None else time[fit_rows]
        weights: dict[str, np.ndarray] | None = None
        for i, l2 in enumerate(descending):
            start = weights if config.model == "linear" else None
            weights = train(z, event[fit_rows], fit_time, target, config, l2=l2, start=start, tolerance=INNER_TOLERANCE)
            eta = SignatureModel(stub, weights).linear_predictor(raw)
            if time is None:
                totals[i] += log_likelihood(eta[score_rows], event[score_rows], None)
            else:
                totals[i] += log_likelihood(eta, event, time) - log_likelihood(eta[fit_rows], event[fit_rows], fit_time)
    best = int(np.argmax(totals))  # the first maximum: the largest penalty among equals
    order = np.argsort(descending)  # report candidates ascending
    return PenaltyChoice(
        l2=descending[best],
        chosen_by="inner_cv",
        candidates=tuple(float(descending[i]) for i in order),
        inner_log_likelihood=tuple(float(totals[i]) for i in order),
        inner_folds=splitter.get_n_splits(),
    )


def cross_validate(
    raw: np.ndarray,
    event: np.ndarray,
    time: np.ndarray | None,
    target: TargetKind,
    genes: list[str],
    config: TrainSettings,
    seed: int,
    *,
    log1p: bool = True,
) -> CrossValidation:
    """Repeated stratified k-fold over these rows (the training split; the held-out split is never touched): in
    each fold the preprocessing, the penalty (nested inner CV) and the model are fitted on one side and scored on the
    other, through the serving code path."""
    folds = _folds(event, config.cv_folds)
    splitter = RepeatedStratifiedKFold(n_splits=folds, n_repeats=config.cv_repeats, random_state=seed)
    values, penalties, pooled = [], [], []
    out_of_fold = np.empty(len(event))
    for fold, (fit_rows, score_rows) in enumerate(splitter.split(raw, event)):
        fit_time = None if time is None else time[fit_rows]
        choice = choose_penalty(
            raw[fit_rows], event[fit_rows], fit_time, target, genes, config, seed + fold, log1p=log1p
        )
        preprocessing = fit_preprocessing(raw[fit_rows], log1p)
        weights = train(
            apply_preprocessing(preprocessing, genes, raw[fit_rows]), event[fit_rows], fit_time, target, config,
            l2=choice.l2,
        )  # fmt: skip
        scores = SignatureModel(manifest_stub(genes, target, preprocessing, config), weights).linear_predictor(
            raw[score_rows]
        )
        values.append(
            discrimination(event=event[score_rows], time=None if time is None else time[score_rows], risk_score=scores)
        )
        penalties.append(choice.l2)
        out_of_fold[score_rows] = scores
        if (fold + 1) % folds == 0:  # a repeat's folds cover every row once
            pooled.append(discrimination(event=event, time=time, risk_score=out_of_fold))
    return CrossValidation(metric_name(target), folds, config.cv_repeats, values, penalties, pooled)
