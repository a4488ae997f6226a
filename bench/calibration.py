"""Calibration of the gate's self-contained test on real cohorts: with the outcome permuted, no gene set predicts it,
so every p-value is a null p-value and the gate should pass no more than its false-discovery rate allows.

For each cohort (SurvSet, genome-wide expression: gse1992 and gse3143, breast, gene symbols; DLBCL, anonymous genes)
and each of ``--runs`` permutations of the outcome (the patients' (time, event) pairs shuffled together, or the event
alone with ``--binary``), one run over the cohort's gene sets through the gate's own code (``bench/gates.py``:
preprocess, cross-validate with its share of the run's permutations, the run's verdict), as a user's run of that
data would go. Gene sets: ``--sets`` GO biological-process sets with 5 to 50 of their genes in the cohort (seeded);
for a cohort without gene symbols, co-expression modules as coherent as pathways (a seed gene and its most correlated
genes, 5 to 50 of them).

Reported per cohort: the p-values in all; the share at or below 0.05, 0.01 and 0.001 against the binomial 95%
interval of the nominal rate; in how many runs the default gate passed anything (under the global null, where every
set is noise, Benjamini-Hochberg at FDR 0.1 passes something in at most 10% of runs) and how many sets it passed.

Usage: python bench/calibration.py [--cohorts gse1992,gse3143,DLBCL] [--runs 20] [--sets 500] [--binary]
                                   [--cv-repeats 5] [--processes 2]
Not a test: it measures.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from gates import decide_gates, gate_settings, share_at_level
from real_data import TIME_COLUMN, co_expression_modules, survset_cohort
from scipy.stats import binom

from genesig.logs import configure_logging
from genesig.pipeline.cohort import CohortColumns, read_cohort
from genesig.pipeline.settings import TrainSettings
from genesig.pipeline.signatures import GeneSignature, read_signatures

logger = logging.getLogger("bench.calibration")
BENCH_DIR = Path(__file__).resolve().parent
GO = BENCH_DIR.parent.parent / "shared" / "data" / "go-biological-process-2021.gmt"
LEVELS = (0.05, 0.01, 0.001)


def gene_sets(frame: pd.DataFrame, count: int, seed: int = 0) -> tuple[str, list[GeneSignature]]:
    """``count`` gene sets of 5 to 50 genes present in the cohort: GO biological-process sets where the cohort has
    gene symbols, else co-expression modules (a seed gene and its most correlated genes)."""
    genes = [c for c in frame.columns if c not in ("Case_ID", "SurvivalStatus", TIME_COLUMN)]
    present = set(genes)
    rng = np.random.default_rng(seed)
    go = [s for s in read_signatures(GO) if 5 <= sum(g in present for g in s.genes) <= 50]
    if len(go) >= count:
        picked = sorted(rng.choice(len(go), size=count, replace=False))
        return "GO biological process (5-50 genes in the cohort)", [go[i] for i in picked]
    return "co-expression modules (a seed gene and its 4-49 most correlated genes)", co_expression_modules(
        frame, count, seed
    )


def one_run(task: tuple[str, int, argparse.Namespace]) -> dict[str, Any]:
    name, run, args = task
    configure_logging("WARNING")
    frame = survset_cohort(name)
    kind, signatures = gene_sets(frame, args.sets)
    rng = np.random.default_rng([run, 7])
    outcome = ["SurvivalStatus"] if args.binary else ["SurvivalStatus", TIME_COLUMN]
    frame[outcome] = frame[outcome].to_numpy()[rng.permutation(len(frame))]  # kept together, across patients
    with tempfile.TemporaryDirectory(prefix="genesig-calibration-") as tmp:
        path = Path(tmp) / f"{name}.csv"
        frame.to_csv(path, index=False)
        columns = CohortColumns(time=None if args.binary else TIME_COLUMN, values="log")
        cohort = read_cohort(path, columns)
    train = TrainSettings(seed=run, cv_repeats=args.cv_repeats)
    gates = {k: v for k, v in gate_settings(args.fdr, args.permutations).items() if k == "default"}
    decided = decide_gates(signatures, cohort, train, gates, competitive=False, min_coverage=0.0)
    rows = decided.gates["default"]
    p = [r.p_value for r in rows if r.p_value is not None]
    return {
        "cohort": name,
        "run": run,
        "sets": kind,
        "patients": cohort.n,
        "events": int(cohort.event.sum()),
        "p_values": p,
        "at_or_below": {str(level): sum(v <= level for v in p) for level in LEVELS},
        "passed": sum(r.passed for r in rows),
        "seconds": round(decided.evaluate_s, 1),
    }


def summarise(runs: list[dict[str, Any]], fdr: float) -> dict[str, Any]:
    p = np.concatenate([r["p_values"] for r in runs])
    out: dict[str, Any] = {"runs": len(runs), "p_values": int(p.size)}
    totals = [len(r["p_values"]) for r in runs]
    for level in LEVELS:
        # One permuted outcome per run: its sets' p-values come in clusters (overlapping, co-expressed gene sets meet
        # the same chance association), so the share is also given over runs.
        out[str(level)] = share_at_level([r["at_or_below"][str(level)] for r in runs], totals, level, "run")
    with_passes = sum(r["passed"] > 0 for r in runs)
    out["runs_with_a_pass"] = with_passes
    out["runs_with_a_pass_allowed_95"] = int(binom.ppf(0.95, len(runs), fdr))
    out["passed_in_all"] = sum(r["passed"] for r in runs)
    out["seconds_per_run"] = float(np.mean([r["seconds"] for r in runs]))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cohorts", default="gse1992,gse3143,DLBCL")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--sets", type=int, default=500)
    parser.add_argument("--binary", action="store_true", help="the event alone (AUC) instead of time-to-event")
    parser.add_argument("--cv-repeats", type=int, default=TrainSettings().cv_repeats)
    parser.add_argument("--permutations", type=int, default=200)
    parser.add_argument("--fdr", type=float, default=0.1)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "calibration.json")
    args = parser.parse_args()
    configure_logging("INFO")
    tasks = [(name, run, args) for name in args.cohorts.split(",") for run in range(args.runs)]
    if args.processes > 1:
        with ProcessPoolExecutor(max_workers=args.processes) as pool:
            runs = list(pool.map(one_run, tasks))
    else:
        runs = [one_run(task) for task in tasks]
    cohorts = {}
    for name in args.cohorts.split(","):
        mine = [r for r in runs if r["cohort"] == name]
        cohorts[name] = {"sets": mine[0]["sets"], "patients": mine[0]["patients"], "events": mine[0]["events"],
                         **summarise(mine, args.fdr)}  # fmt: skip
    report = {
        "parameters": {k: str(v) for k, v in vars(args).items()},
        "cohorts": cohorts,
        "runs": [{k: v for k, v in r.items() if k != "p_values"} for r in runs],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    lines = ["| cohort | sets | p-values | p <= 0.05 | p <= 0.01 | p <= 0.001 | runs with a pass (at most) |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, c in cohorts.items():
        shares = " | ".join(
            f"{c[str(level)]['share']:.4f} [{c[str(level)]['nominal_interval'][0]:.4f}, "
            f"{c[str(level)]['nominal_interval'][1]:.4f}]"
            for level in LEVELS
        )
        lines.append(f"| {name} | {c['sets']} | {c['p_values']:,} | {shares} | {c['runs_with_a_pass']} of {c['runs']}"
                     f" ({c['runs_with_a_pass_allowed_95']}) |")  # fmt: skip
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
