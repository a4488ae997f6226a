"""Reports a scientist can quote.

Per signature (``report.png`` beside ``evaluation.json``): the held-out patients' ROC with its AUC (binary status),
or their Kaplan-Meier curves by predicted risk group with censoring marks, numbers at risk and the log-rank p
(time-to-event); beside the plot, the numbers: the cross-validated metric and its interval, the held-out metric
with n and events, coverage, the penalty, p and q with the outcome permuted (the gate's test) and against random
gene sets (beside it), and the gate's verdict. It is drawn from the evaluation's own files (``evaluation.json``,
``predictions.csv``) only, so a run redraws it once the run's q-values are known.

Per run (``significance.png`` in the work folder, when either test is on): every evaluated signature's pooled
out-of-fold metric (what both tests compare) against its size, over the self-contained null's band (the outcome
permuted: 5-95 % and median by size) and the random gene sets' (at each size drawn), passed and failed signatures
marked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.stats

from genesig.pipeline.evaluation import REPORT_FILE, Evaluation

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from genesig.pipeline.results import RunNulls, SignatureResult
    from genesig.pipeline.significance import SizeNull

RUN_PLOT_FILE = "significance.png"
GROUP_COLOURS = {"low": "#1b7837", "high": "#b2182b"}
# significance.png names this many passing signatures (the best first), each cut to LABEL_CHARS characters.
LABELLED_SIGNATURES = 15
LABEL_CHARS = 28


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


def logrank_p(time: np.ndarray, event: np.ndarray, groups: Sequence[str]) -> float | None:
    """The log-rank test of equal survival across ``groups`` (chi-square with groups - 1 degrees of freedom);
    None with fewer than two groups or no event."""
    labels = list(dict.fromkeys(groups))
    if len(labels) < 2 or not event.any():
        return None
    member = np.array([[g == label for g in groups] for label in labels])  # groups x patients
    observed_minus_expected = np.zeros(len(labels))
    covariance = np.zeros((len(labels), len(labels)))
    for t in np.unique(time[event]):
        at_risk = time >= t
        n, deaths = at_risk.sum(), (event & (time == t)).sum()
        n_group = (member & at_risk).sum(axis=1)
        observed_minus_expected += (member & event & (time == t)).sum(axis=1) - deaths * n_group / n
        if n > 1:
            share = n_group / n
            covariance += deaths * (n - deaths) / (n - 1) * (np.diag(share) - np.outer(share, share))
    head = slice(0, len(labels) - 1)  # the last group is determined by the others
    try:
        statistic = float(
            observed_minus_expected[head] @ np.linalg.solve(covariance[head, head], observed_minus_expected[head])
        )
    except np.linalg.LinAlgError:
        return None
    return float(scipy.stats.chi2.sf(statistic, len(labels) - 1))


def _short(name: str, width: int = 70) -> str:
    """Signature names (GO terms) can be long: one line that fits the figure's title."""
    return name if len(name) <= width else name[: width - 1] + "…"


def _figure(width: float, height: float) -> Figure:
    # A bare Figure renders with Agg and keeps no pyplot state; fixed margins instead of tight_layout, which drew
    # every figure twice (~40% of a report's time at 1,000 signatures).
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


def _kaplan_meier_panel(fig: Figure, ax: Axes, table: pd.DataFrame, time_column: str, event_column: str) -> str:
    """KM curves by risk group with censoring marks, and the numbers at risk under the axes; returns the legend's
    log-rank line."""
    time = table[time_column].to_numpy(dtype=float)
    event = table[event_column].to_numpy() == 1
    groups = table["risk_group"].astype(str).tolist()
    labels = list(dict.fromkeys(sorted(set(groups), key=lambda g: (g != "low", g))))
    for label in labels:
        mask = np.array([g == label for g in groups])
        t, s = kaplan_meier(time[mask], event[mask])
        if time[mask].max() > t[-1]:  # the curve runs on to the group's last follow-up (censored patients)
            t, s = np.append(t, time[mask].max()), np.append(s, s[-1])
        colour = GROUP_COLOURS.get(label)
        ax.step(t, s, where="post", color=colour, linewidth=2, label=f"{label} risk (n={int(mask.sum())})")
        censored = time[mask & ~event]
        # The survival estimate just after each censoring time: the curve's value at that time.
        at = s[np.searchsorted(t, censored, side="right") - 1]
        ax.plot(censored, at, linestyle="none", marker="|", markersize=9, color=colour)
    ax.set_xlabel(time_column)
    ax.set_ylabel("survival probability")
    ax.set_ylim(0, 1.03)
    ax.set_xlim(left=0)
    ticks = [x for x in ax.get_xticks() if 0 <= x <= time.max()]
    ax.set_xticks(ticks)
    # Numbers at risk: one row per group, under the tick labels.
    left, bottom, width, _ = ax.get_position().bounds
    x0, x1 = ax.get_xlim()
    fig.text(left - 0.03, bottom - 0.13, "at risk", ha="right", fontsize=10, weight="bold")
    for row, label in enumerate(labels):
        mask = np.array([g == label for g in groups])
        y = bottom - 0.17 - 0.04 * row
        fig.text(left - 0.03, y, label, ha="right", fontsize=10, color=GROUP_COLOURS.get(label))
        for tick in ticks:
            fig.text(left + width * (tick - x0) / (x1 - x0), y, str(int((time[mask] >= tick).sum())), ha="center",
                     fontsize=10)  # fmt: skip
    p = logrank_p(time, event, groups)
    return "log-rank p = n/a" if p is None else f"log-rank p = {p:.2g}"


def write_report(evaluation: Evaluation, table: pd.DataFrame, out_dir: Path) -> Path:
    """``report.png`` for one signature from its evaluation and held-out predictions (see the module's docstring)."""
    fig = _figure(11, 5.8)
    # Time-to-event leaves room under the axes for the numbers at risk.
    ax = fig.add_axes((0.09, 0.12, 0.50, 0.77) if evaluation.target == "binary" else (0.09, 0.34, 0.50, 0.55))
    label = "AUC" if evaluation.metric == "auc" else "C-index"
    event_column = evaluation.event_column
    if evaluation.target == "binary":
        fpr, tpr = roc_points(table[event_column].to_numpy() == 1, table[evaluation.output].to_numpy(dtype=float))
        ax.step(fpr, tpr, where="post", linewidth=2, label=f"model, AUC {evaluation.test.value:.3f}")
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance, AUC 0.5")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title("ROC, held-out patients", fontsize=12)
    else:
        logrank = _kaplan_meier_panel(fig, ax, table, evaluation.time_column, event_column)
        ax.plot([], [], linestyle="none", label=logrank)
        ax.plot([], [], linestyle="none", marker="|", color="black", label="censored")
        ax.set_title("Kaplan-Meier by predicted risk group, held-out patients", fontsize=12)
    ax.legend(fontsize=10, loc="best")  # over the fewest points: it must not hide a curve
    ax.tick_params(labelsize=10)
    fig.suptitle(_short(evaluation.signature), fontsize=14, weight="bold", x=0.09, ha="left")
    fig.text(0.64, 0.88, panel_text(evaluation, label), va="top", ha="left", fontsize=11, family="monospace")
    path = out_dir / REPORT_FILE
    fig.savefig(path)
    return path


def panel_text(evaluation: Evaluation, label: str) -> str:
    """The report's right-hand panel: what the gate saw, in the order a reader checks it."""
    cv, test, model = evaluation.cross_validation, evaluation.test, evaluation.model
    low, high = cv.interval
    significance = evaluation.significance or {}
    gate = evaluation.decided
    genes = len(evaluation.genes)
    rows = [
        (f"CV {label}", f"{cv.mean:.3f}  [{low:.3f}, {high:.3f}]"),
        (f"held-out {label}", f"{test.value:.3f}"),
        ("held-out n", f"{test.patients}, {test.events} events"),
        ("genes", f"{genes}" + (f" ({model.coverage:.0%} of the set)" if model.coverage is not None else "")),
    ]
    if model.l2 is not None:
        how = "inner CV" if model.l2_chosen_by == "inner_cv" else "fixed"
        rows.append(("ridge penalty", f"{model.l2:g} ({how})"))
    contained = significance.get("self_contained") or {}
    versus = significance.get("competitive") or {}
    if significance.get("observed") is not None:
        rows.append((f"pooled OOF {label}", f"{significance['observed']:.3f}"))
    if contained.get("p_value") is not None:
        rows.append(("p, outcome perm.", f"{contained['p_value']:.2g} ({contained.get('permutations')} perm.)"))
        if contained.get("q_value") is not None:
            rows.append(("q (run, BH)", f"{contained['q_value']:.3g}"))  # as the reason gives it
    if versus.get("p_value") is not None:
        q = f", q {versus['q_value']:.2g}" if versus.get("q_value") is not None else ""
        rows.append(("vs random sets", f"p {versus['p_value']:.2g}{q}"))
    elif versus.get("status") == "not applicable":
        rows.append(("vs random sets", "not applicable"))
    lines = [f"{key + ' ':<18}{value}" for key, value in rows]
    if not gate.final and gate.passed:
        verdict = ["THRESHOLD PASSED: the run", "decides (see the run report)"]
    elif not gate.final:
        verdict = ["BELOW THRESHOLD"]  # fails whatever the run's test says
    else:
        verdict = [str(gate.outcome or ("passed" if gate.passed else "below threshold")).upper()]
    lines += ["", *verdict]
    lines += _wrap(gate.reason, 44)
    return "\n".join(lines)


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return [line for part in text.split("; ") for line in textwrap.wrap(part, width)]


def write_null_plot(
    results: Sequence[SignatureResult], nulls: RunNulls, competitive: Mapping[int, SizeNull], path: Path
) -> Path | None:
    """``significance.png``: each evaluated signature's pooled out-of-fold metric (what both tests compare) against
    its size, over the self-contained null's band and the random gene sets' (where drawn); None when there is
    nothing to draw."""
    done = [r for r in results if r.evaluated]
    permuted = nulls.permutations
    if not done or (permuted is None and not competitive):
        return None
    fig = _figure(11, 6.5)
    ax = fig.add_axes((0.08, 0.11, 0.64, 0.8))
    if permuted is not None and permuted.draws:
        smallest, largest = min(len(r.genes) for r in done), max(len(r.genes) for r in done)
        grid = (
            np.unique(np.geomspace(smallest, largest, 40).round().astype(int))
            if largest > smallest
            else np.array([smallest])
        )
        band = np.array([permuted.percentiles(int(k), [5, 50, 95]) for k in grid])
        ax.fill_between(grid, band[:, 0], band[:, 2], color="#dddddd", step="mid", label="outcome permuted: 5-95%",
                        zorder=1)  # fmt: skip
        ax.plot(grid, band[:, 1], color="#999999", linewidth=1, label="outcome permuted: median", zorder=1)
    if competitive:
        sizes = sorted(competitive)
        bands = np.array([competitive[k].percentiles([5, 50, 95]) for k in sizes])
        # The random-set null only at the sizes drawn: its median and 5-95% range at each.
        ax.errorbar(
            sizes, bands[:, 1], yerr=[bands[:, 1] - bands[:, 0], bands[:, 2] - bands[:, 1]], fmt="_", markersize=14,
            color="#888888", ecolor="#9ecae1", elinewidth=6, label="random gene sets: median, 5-95%", zorder=2,
        )  # fmt: skip
    for passed, colour, text in ((False, "#4575b4", "not passed"), (True, "#d73027", "passed")):
        chosen = [r for r in done if r.passed == passed]
        ax.scatter([len(r.genes) for r in chosen], [r.cv_pooled for r in chosen], s=22, color=colour,
                   label=f"{text} ({len(chosen)})", zorder=3)  # fmt: skip
    # Name the passing signatures (the best ones when there are many): the dots a reader asks about.
    passing = sorted((r for r in done if r.passed), key=lambda r: -(r.cv_pooled or 0.0))[:LABELLED_SIGNATURES]
    for r in passing:
        ax.annotate(_short(r.signature, LABEL_CHARS), (len(r.genes), r.cv_pooled or 0.0), xytext=(5, 3),
                    textcoords="offset points", fontsize=8, color="#a50026")  # fmt: skip
    ax.set_xscale("log")
    from matplotlib.ticker import NullFormatter

    low, high = ax.get_xlim()
    ticks = [t for t in (2, 3, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000) if low <= t <= high]
    ax.set_xticks(ticks, labels=[str(t) for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("genes in the signature (in the data)", fontsize=12)
    ax.set_ylabel(f"pooled out-of-fold {'AUC' if done[0].metric == 'auc' else 'C-index'}", fontsize=12)
    ax.set_title("Signatures against chance (outcome permuted) and random gene sets", fontsize=14)
    ax.legend(fontsize=10, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.savefig(path)
    return path
