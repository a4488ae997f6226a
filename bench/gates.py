"""The benchmarks' shared path through the gate: signatures evaluated on a cohort as run-local evaluates them (up to
the verdict; no artifact, report or registry), then the run's verdict under the three gates compared everywhere:
the default (threshold and the self-contained test), the threshold alone, and the competitive gate (the default and
q against random gene sets)."""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import binom
from scipy.stats import t as t_dist

from genesig.pipeline.cohort import Cohort
from genesig.pipeline.results import Outcome, RunNulls, SignatureResult, judge
from genesig.pipeline.settings import GateSettings, TrainSettings
from genesig.pipeline.signatures import GeneSignature, match
from genesig.pipeline.significance import draw_competitive, permutations_per_signature
from genesig.pipeline.steps import cross_validate, preprocess

GATES = ("default", "threshold_only", "competitive_gate")


def gate_settings(
    fdr: float = 0.1, permutations: int = 200, random_sets: int = GateSettings().random_sets
) -> dict[str, GateSettings]:
    return {
        "default": GateSettings(fdr=fdr, permutations=permutations, random_sets=random_sets),
        "threshold_only": GateSettings(permutations=0, competitive="off"),
        "competitive_gate": GateSettings(
            fdr=fdr, permutations=permutations, random_sets=random_sets, competitive="gate"
        ),
    }


def evaluate(
    signatures: list[GeneSignature],
    cohort: Cohort,
    train: TrainSettings,
    *,
    permutations: int,
    min_coverage: float = 0.5,
) -> list[SignatureResult]:
    """Each signature as run-local evaluates it, up to the threshold's part of the verdict: matched (skipped below
    the coverage or two genes), preprocessed and cross-validated with its share of the run's ``permutations``."""
    gate = GateSettings()
    matched = [match(s, cohort.candidate_genes(), 2, min_coverage) for s in signatures]
    per = permutations_per_signature(sum(not m.skip_reason for m in matched), permutations)
    results = []
    for one in matched:
        result = SignatureResult.of(one, Outcome.SKIPPED, one.skip_reason or "")
        if not one.skip_reason:
            cv = cross_validate(preprocess(cohort, one, settings=train), train, permutations=per)
            result.metric = cv.metric
            result.cv_mean, result.cv_pooled, result.permuted = cv.mean, cv.pooled_mean, cv.permuted
            result.threshold_passed = cv.mean >= gate.threshold
            verdict = ">=" if result.threshold_passed else "<"
            result.threshold_reason = f"cross-validated mean {cv.metric} {cv.mean:.3f} {verdict} threshold"
            result.outcome = Outcome.PASSED if result.threshold_passed else Outcome.BELOW_THRESHOLD
        results.append(result)
    return results


@dataclass
class Decided:
    """The verdicts under each gate (the same CV values and p-values), and the seconds each part took."""

    gates: dict[str, list[SignatureResult]]
    nulls: RunNulls
    evaluate_s: float
    competitive_s: float


def decide_gates(
    signatures: list[GeneSignature],
    cohort: Cohort,
    train: TrainSettings,
    gates: dict[str, GateSettings],
    *,
    competitive: bool = True,
    min_coverage: float = 0.5,
) -> Decided:
    """``evaluate``, the competitive nulls of the sizes needed (unless ``competitive`` is False: then the competitive
    gate is left out), and the run's verdict under each of ``gates``."""
    default = gates["default"]
    started = time.perf_counter()
    results = evaluate(signatures, cohort, train, permutations=default.permutations, min_coverage=min_coverage)
    evaluate_s = time.perf_counter() - started
    nulls, genes = None, 0
    if competitive:
        with tempfile.TemporaryDirectory(prefix="genesig-bench-null-") as tmp:
            trainable = [len(r.genes) for r in results if r.outcome != Outcome.SKIPPED]
            nulls, genes = draw_competitive(
                cohort, train, None, results, trainable, default.random_sets, Path(tmp) / "null"
            )
    competitive_s = time.perf_counter() - started - evaluate_s
    decided: dict[str, list[SignatureResult]] = {}
    described = RunNulls("", "")
    for name, gate in gates.items():
        if gate.competitive == "gate" and nulls is None:
            continue  # no random sets drawn: no competitive gate
        rows, told = judge(results, gate, nulls, genes)
        if name == "default":
            described = told
        decided[name] = rows
    return Decided(decided, described, evaluate_s, competitive_s)


def share_at_level(below: list[int], totals: list[int], level: float, unit: str) -> dict[str, Any]:
    """The share of null p-values at or below ``level`` over every ``unit`` (a seed, a run), with the binomial 95%
    interval of the nominal rate, and, since a unit's p-values share its outcome and its null and so come in
    clusters, the mean of the units' own shares with its t interval (``share_by_<unit>``, ``<unit>_interval``)."""
    count, total = sum(below), sum(totals)
    low, high = binom.interval(0.95, total, level)
    shares = [b / n for b, n in zip(below, totals, strict=True) if n]
    mean = float(np.mean(shares)) if shares else math.nan
    margin = (float(t_dist.ppf(0.975, len(shares) - 1) * np.std(shares, ddof=1) / np.sqrt(len(shares)))
              if len(shares) > 1 else math.nan)  # fmt: skip
    return {
        "count": count,
        "share": count / total if total else 0.0,
        "nominal_interval": [low / total, high / total] if total else [0.0, 0.0],
        "inside": bool(low <= count <= high),
        f"share_by_{unit}": shares,
        f"{unit}_interval": [mean - margin, mean + margin],
        f"nominal_inside_{unit}_interval": bool(abs(mean - level) <= margin),
    }
