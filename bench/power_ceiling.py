"""How far can any calibrated test of the gate's statistic go on the gate benchmark's design?

For each seed of ``bench/significance.py``'s design, each planted signature's **exact** self-contained p: its pooled
out-of-fold metric against ``--permutations`` (3,000) permutations of its own, every one as the run does it (the
outcome permuted across patients, the same folds, preprocessing and nested penalty). No shared null, no fitted tail:
this is the p a test of this statistic can claim at best. Benjamini–Hochberg over the run's ``m`` signatures (the 2
planted and ``--noise`` noise sets) passes a signature of rank ``r`` only when its p is at most ``r * FDR / m``:
without false discoveries the most lenient line is the second planted rank's, ``2 * 0.1 / 1,002 = 2.0e-4``. A planted
signature whose exact p is above that line (even the lower 95% bound of it, from its count of permutations at or
beyond it) cannot pass under any calibrated test of this statistic at that FDR, however its null is computed, unless
the run passes noise too. One beyond every permutation is undetermined: its p is below 1 / (N + 1).

Usage: python bench/power_ceiling.py [--seeds 10] [--permutations 3000] [--noise 1000] [--patients 200]
                                     [--processes 2]
Not a test: it measures.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import beta
from significance import PLANTED, add_cohort_arguments, planted_cohort

from genesig.logs import configure_logging
from genesig.pipeline.settings import GateSettings, TrainSettings
from genesig.pipeline.signatures import match
from genesig.pipeline.steps import cross_validate, preprocess

BENCH_DIR = Path(__file__).resolve().parent
logger = logging.getLogger("bench.power_ceiling")


def one_seed(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    configure_logging("WARNING")
    signatures, cohort = planted_cohort(seed, args)
    train = TrainSettings(seed=seed, cv_repeats=args.cv_repeats)
    out: dict[str, Any] = {"seed": seed}
    for signature in signatures[: len(PLANTED)]:
        matched = match(signature, cohort.candidate_genes(), 2, 0.5)
        cv = cross_validate(preprocess(cohort, matched, settings=train), train, permutations=args.permutations)
        permuted = np.asarray(cv.permuted)
        beyond = int(np.count_nonzero(permuted >= cv.pooled_mean))
        out[signature.name] = {
            "cv_pooled": cv.pooled_mean,
            "exact_p": (1 + beyond) / (len(permuted) + 1),
            "permutations_at_or_beyond": beyond,
        }
    return out


def summarise(runs: list[dict[str, Any]], permutations: int, fdr: float, noise: int) -> dict[str, Any]:
    """The ceiling over the seeds' exact p-values (each run's rows gain their lower bound and whether out of reach)."""
    m = len(PLANTED) + noise
    # Without false discoveries the most lenient line a planted signature can face is the last planted rank's.
    line = len(PLANTED) * fdr / m
    # A planted signature is out of reach when even the lower 95% bound of its exact p (Clopper-Pearson on its
    # exceedances) is above that line; one beyond all N permutations is undetermined (p < 1 / (N + 1)).
    out_of_reach = 0
    for run in runs:
        for name in PLANTED:
            row = run[name]
            beyond = row["permutations_at_or_beyond"]
            row["exact_p_lower_95"] = float(beta.ppf(0.025, beyond, permutations - beyond + 1)) if beyond else 0.0
            row["out_of_reach"] = row["exact_p_lower_95"] > line
            out_of_reach += row["out_of_reach"]
    summary = {
        "signatures": m,
        "bh_line_without_false_discoveries": line,
        "planted_out_of_reach": out_of_reach,
        "planted_pass_rate_ceiling": 1 - out_of_reach / (len(PLANTED) * len(runs)),
        "exact_p": {name: [run[name]["exact_p"] for run in runs] for name in PLANTED},
        "beyond_every_permutation": {
            name: sum(run[name]["permutations_at_or_beyond"] == 0 for run in runs) for name in PLANTED
        },
    }
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_cohort_arguments(parser)
    parser.add_argument("--permutations", type=int, default=3000)
    parser.add_argument("--cv-repeats", type=int, default=2)
    parser.add_argument("--fdr", type=float, default=GateSettings().fdr)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "power-ceiling.json")
    args = parser.parse_args()
    configure_logging("INFO")
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    with ProcessPoolExecutor(max_workers=args.processes) as pool:
        runs = list(pool.map(one_seed, seeds, [args] * len(seeds)))
    summary = summarise(runs, args.permutations, args.fdr, args.noise)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"parameters": {k: str(v) for k, v in vars(args).items()}, "summary": summary, "runs": runs},
                   indent=2) + "\n"
    )  # fmt: skip
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
