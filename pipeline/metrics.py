"""Discrimination metrics with keyword-only arguments (libraries disagree on order and on the score's sign).

``risk_score``: higher means worse (more likely to die / higher hazard) for both metrics.
"""

from __future__ import annotations

import numpy as np

from genesig.errors import DataError


def auc(*, event: np.ndarray, risk_score: np.ndarray) -> float:
    """Area under the ROC curve: P(score of a patient with the event > score of one without), ties count 1/2."""
    event = np.asarray(event, dtype=bool)
    scores = np.asarray(risk_score, dtype=np.float64)
    if len(event) != len(scores):
        raise DataError(f"'event' has {len(event)} samples but 'risk_score' has {len(scores)}")
    n_pos = int(event.sum())
    n_neg = len(event) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise DataError("AUC needs patients with and without the event")
    # Mann-Whitney U with average ranks for ties.
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    u = ranks[event].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def c_index(*, time: np.ndarray, event: np.ndarray, risk_score: np.ndarray) -> float:
    """Harrell's concordance: among pairs where the earlier time is an event, how often that patient had the
    higher risk score; risk ties count 1/2, pairs with equal times are not comparable."""
    time = np.asarray(time, dtype=np.float64)
    event = np.asarray(event, dtype=bool)
    risk = np.asarray(risk_score, dtype=np.float64)
    if not (len(time) == len(event) == len(risk)):
        raise DataError(f"'time' has {len(time)}, 'event' {len(event)} and 'risk_score' {len(risk)} samples")
    if not event.any():
        raise DataError("all samples are censored: the concordance index is undefined")
    earlier = (time[:, None] < time[None, :]) & event[:, None]
    concordant = (risk[:, None] > risk[None, :]) & earlier
    tied = (risk[:, None] == risk[None, :]) & earlier
    comparable = earlier.sum()
    if comparable == 0:
        raise DataError("no comparable pairs: the concordance index is undefined")
    return float((concordant.sum() + 0.5 * tied.sum()) / comparable)


def discrimination(*, event: np.ndarray, time: np.ndarray | None, risk_score: np.ndarray) -> float:
    """AUC for binary targets (no time), Harrell's C-index for time-to-event."""
    if time is None:
        return auc(event=event, risk_score=risk_score)
    return c_index(time=time, event=event, risk_score=risk_score)


def discrimination_by_column(*, event: np.ndarray, time: np.ndarray | None, values: np.ndarray) -> np.ndarray:
    """``discrimination`` of each column of ``values`` (patients x columns) taken alone as the risk score; the same
    numbers as calling it per column, computed at once (a cohort has thousands of genes)."""
    from scipy.stats import rankdata

    values = np.asarray(values, dtype=np.float64)
    event = np.asarray(event, dtype=bool)
    if values.ndim != 2 or values.shape[0] != len(event):
        raise DataError(f"'values' must be patients x columns with {len(event)} patients, got shape {values.shape}")
    if time is None:
        n_pos = int(event.sum())
        n_neg = len(event) - n_pos
        if n_pos == 0 or n_neg == 0:
            raise DataError("AUC needs patients with and without the event")
        ranks = rankdata(values, axis=0)  # average ranks for ties, as in auc()
        return (ranks[event].sum(axis=0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    time = np.asarray(time, dtype=np.float64)
    earlier = (time[:, None] < time[None, :]) & event[:, None]
    comparable = int(earlier.sum())
    if comparable == 0:
        raise DataError("no comparable pairs: the concordance index is undefined")
    first, second = np.nonzero(earlier)  # each comparable pair: the patient who had the event first, then the other
    out = np.empty(values.shape[1])
    for j in range(values.shape[1]):
        diff = values[first, j] - values[second, j]
        out[j] = (np.count_nonzero(diff > 0) + 0.5 * np.count_nonzero(diff == 0)) / comparable
    return out
