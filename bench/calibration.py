"""Are the gate's p-values for the planted signatures calibrated? The gate benchmark's p against the true p.

Joins a gate benchmark report (``bench/significance.py``) with a power-ceiling report (``bench/significance_bound.py``)
of the same cohorts (same seeds, patients, background genes and gene noise: checked), and for each planted signature
compares the gate's p with the signature's true p against the same null (estimated from 1,400 random sets, and its
one-sided 95% lower bound). A gate p below that lower bound is too small for sure (anti-conservative): it can pass a
signature that no calibrated test passes. Reported: per signature, the ratio gate p / true p; overall, its median
(log scale) and how many gate p-values are below the lower bound.

Usage: python bench/calibration.py GATE.json BOUND.json [--out bench/results/calibration.json]
Not a test: it reads two measurements.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

# The cohort options both benchmarks take, with their defaults (reports written before an option existed lack it).
COHORT = {"patients": "200", "background_genes": "0", "gene_noise": "0.6"}


def compare(gate: dict[str, Any], bound: dict[str, Any]) -> dict[str, Any]:
    """Per planted signature of each seed both reports hold: the gate's p, the true p and its lower bound."""
    for option, default in COHORT.items():
        mine, theirs = (float(report["parameters"].get(option, default)) for report in (gate, bound))
        if mine != theirs:
            raise SystemExit(
                f"--{option.replace('_', '-')}: the gate report has {mine:g}, the bound report {theirs:g}; compare "
                "reports of the same cohorts"
            )
    bounds = {run["seed"]: run for run in bound["runs"]}
    rows = []
    for run in gate["runs"]:
        if run["seed"] not in bounds:
            continue
        truth = bounds[run["seed"]]
        for name, measured in run["planted"].items():
            true_p = truth["planted"][name]["p_true"]
            rows.append(
                {
                    "seed": run["seed"],
                    "signature": name,
                    "gate_p": measured["p"],
                    "true_p": true_p,
                    "true_p_lower_bound_95": truth["planted"][name]["p_lower_bound_95"],
                    "ratio": measured["p"] / true_p if true_p > 0 else math.inf,
                }
            )
    if not rows:
        raise SystemExit("the two reports share no seed")
    below = [r for r in rows if r["gate_p"] < r["true_p_lower_bound_95"]]
    return {
        "signatures": len(rows),
        "median_ratio": 10 ** statistics.median(math.log10(r["ratio"]) for r in rows if 0 < r["ratio"] < math.inf),
        "below_the_lower_bound": len(below),
        "rows": rows,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("gate", type=Path)
    parser.add_argument("bound", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = compare(json.loads(args.gate.read_text()), json.loads(args.bound.read_text()))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    lines = ["| seed | signature | gate p | true p (95% lower bound) | gate / true |", "|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(
            f"| {r['seed']} | {r['signature']} | {r['gate_p']:.1e} | {r['true_p']:.1e} "
            f"({r['true_p_lower_bound_95']:.1e}) | {r['ratio']:.2g} |"
        )
    lines.append(
        f"median gate / true p: {result['median_ratio']:.2g}; gate p below the true p's 95% lower bound: "
        f"{result['below_the_lower_bound']} of {result['signatures']}"
    )
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
