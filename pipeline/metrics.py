"""Discrimination metrics with keyword-only arguments (libraries disagree on order and on the score's sign).

``risk_score``: higher means worse (more likely to die / higher hazard) for both metrics. One vectorised
implementation scores one vector of risk scores or many at once (the columns of ``discrimination_by_column``: the
folds of a batch of cross-validations, or every gene of a cohort taken alone).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from genesig.errors import DataError

# Comparable pairs x columns scored per chunk of columns in the C-index (bounds the memory of many columns at once).
_PAIR_CELLS = 4_000_000


def auc(*, event: np.ndarray, risk_score: np.ndarray) -> float:
    """Area under the ROC curve: P(score of a patient with the event > score of one without), ties count 1/2."""
    scores = np.asarray(risk_score, dtype=np.float64)
    if len(event) != len(scores):
        raise DataError(f"'event' has {len(event)} samples but 'risk_score' has {len(scores)}")
    return float(discrimination_by_column(event=event, time=None, values=scores[:, None])[0])


def c_index(*, time: np.ndarray, event: np.ndarray, risk_score: np.ndarray) -> float:
    """Harrell's concordance: among pairs where the earlier time is an event, how often that patient had the
    higher risk score; risk ties count 1/2, pairs with equal times are not comparable."""
    risk = np.asarray(risk_score, dtype=np.float64)
    if not (len(time) == len(event) == len(risk)):
        raise DataError(f"'time' has {len(time)}, 'event' {len(event)} and 'risk_score' {len(risk)} samples")
    return float(discrimination_by_column(event=event, time=time, values=risk[:, None])[0])


def discrimination(*, event: np.ndarray, time: np.ndarray | None, risk_score: np.ndarray) -> float:
    """AUC for binary targets (no time), Harrell's C-index for time-to-event."""
    if time is None:
        return auc(event=event, risk_score=risk_score)
    return c_index(time=time, event=event, risk_score=risk_score)


def discrimination_by_column(*, event: np.ndarray, time: np.ndarray | None, values: np.ndarray) -> np.ndarray:
    """``discrimination`` of each column of ``values`` (patients x columns) taken alone as the risk score, computed at
    once: the AUC by Mann-Whitney U with average ranks for ties, Harrell's C over the comparable pairs."""
    values = np.asarray(values, dtype=np.float64)
    event = np.asarray(event, dtype=bool)
    if values.ndim != 2 or values.shape[0] != len(event):
        raise DataError(f"'values' must be patients x columns with {len(event)} patients, got shape {values.shape}")
    if time is None:
        n_pos = int(event.sum())
        n_neg = len(event) - n_pos
        if n_pos == 0 or n_neg == 0:
            raise DataError("AUC needs patients with and without the event")
        ranks = rankdata(values, axis=0)  # average ranks for ties
        return np.asarray((ranks[event].sum(axis=0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    time = np.asarray(time, dtype=np.float64)
    if not event.any():
        raise DataError("all samples are censored: the concordance index is undefined")
    earlier = (time[:, None] < time[None, :]) & event[:, None]
    comparable = int(earlier.sum())
    if comparable == 0:
        raise DataError("no comparable pairs: the concordance index is undefined")
    first, second = np.nonzero(earlier)  # each comparable pair: the patient who had the event first, then the other
    out = np.empty(values.shape[1])
    step = max(1, _PAIR_CELLS // comparable)
    for start in range(0, values.shape[1], step):
        diff = values[first, start : start + step] - values[second, start : start + step]
        out[start : start + step] = (np.count_nonzero(diff > 0, axis=0) + 0.5 * np.count_nonzero(diff == 0, axis=0)) / (
            comparable
        )
    return out
