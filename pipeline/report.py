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


def _short(name: str, width: int = 64) -> str:
    """Signature names (GO terms) can be long: one line that fits the figure's title."""
    return name if len(name) <= width else name[: width - 1] + "…"


def write_report(prepared: Prepared, values: np.ndarray, groups: list[str], risk: np.ndarray, out_dir: Path) -> Path:
    # A bare Figure renders with Agg and keeps no pyplot state; fixed margins instead of
    # tight_layout, which drew every figure twice (~40% of a report's time at 1,000 signatures).
    from matplotlib.figure import Figure

    test = prepared.test
    fig = Figure(figsize=(5, 4), dpi=110)
    fig.subplots_adjust(left=0.13, right=0.97, top=0.88, bottom=0.12)
    ax = fig.subplots()
    if test.time is None:
        fpr, tpr = roc_points(test.event, risk)
        ax.step(fpr, tpr, where="post", label="model")
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title(f"{_short(prepared.signature)}\nROC on the held-out split", fontsize=9)
    else:
        for label in dict.fromkeys(groups):
            mask = np.array([g == label for g in groups])
            t, s = kaplan_meier(test.time[mask], test.event[mask])
            ax.step(t, s, where="post", label=f"{label} risk (n={int(mask.sum())})")
        ax.set_xlabel(prepared.time_column or "time")
        ax.set_ylabel("survival probability")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{_short(prepared.signature)}\nKaplan-Meier by predicted risk group", fontsize=9)
    ax.legend(fontsize=8)
    path = out_dir / "report.png"
    fig.savefig(path)
    return path
