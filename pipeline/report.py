"""The evaluation report's plot: ROC curve (binary target) or Kaplan-Meier curves of the predicted risk groups."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from genesig.pipeline.steps import Prepared


def roc_points(event: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-score, kind="mergesort")
    hits = event[order].astype(float)
    tpr = np.concatenate([[0.0], np.cumsum(hits) / max(hits.sum(), 1)])
    fpr = np.concatenate([[0.0], np.cumsum(1 - hits) / max((1 - hits).sum(), 1)])
    return fpr, tpr


def kaplan_meier(time: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Step function of the survival estimate at each distinct event time."""
    times = np.unique(time[event])
    survival = []
    s = 1.0
    for t in times:
        at_risk = np.sum(time >= t)
        deaths = np.sum((time == t) & event)
        s *= 1 - deaths / at_risk
        survival.append(s)
    return np.concatenate([[0.0], times]), np.concatenate([[1.0], survival])


def write_report(prepared: Prepared, values: np.ndarray, groups: list[str], risk: np.ndarray, out_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    test = prepared.test
    fig, ax = plt.subplots(figsize=(5, 4), dpi=110)
    if test.time is None:
        fpr, tpr = roc_points(test.event, risk)
        ax.step(fpr, tpr, where="post", label="model")
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title(f"{prepared.signature}: ROC on the held-out split", fontsize=9)
    else:
        for label in dict.fromkeys(groups):
            mask = np.array([g == label for g in groups])
            t, s = kaplan_meier(test.time[mask], test.event[mask])
            ax.step(t, s, where="post", label=f"{label} risk (n={int(mask.sum())})")
        ax.set_xlabel(prepared.time_column or "time")
        ax.set_ylabel("survival probability")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{prepared.signature}: Kaplan-Meier by predicted risk group", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out_dir / "report.png"
    fig.savefig(path)
    plt.close(fig)
    return path
