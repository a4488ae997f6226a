"""Gate benchmark: does the default gate pass what predicts the outcome and keep noise out?

Planted cohorts (default 200 patients, binary outcome): two planted signatures of 10 genes (effects 2.0 and 1.5
log-odds per SD of their activity) among 1,000 noise gene sets of mixed sizes (3 to 100 genes, log-uniform, drawn
from 4,000 noise genes), for several seeds. Every signature goes through the gate's own code, as run-local runs it:
matched against the data, preprocessed, cross-validated with its share of the run's outcome permutations in the same
batch, then the run's verdict (``genesig.pipeline.results.judge``). The final model fit, held-out scoring and
report of a run-local run are left out: they do not change the verdict.

Three gates on the same CV values and p-values: the default (threshold and the self-contained test's q <= FDR), the
threshold alone, and the competitive gate (the default and, on top, q <= FDR against random gene sets of the size).
Reported per seed and on average: planted signatures passed, noise signatures passed, the realised false-discovery
proportion (noise passed / all passed).

**Calibration**: the noise signatures' genes are independent of the outcome, so their self-contained p-values are
draws of the null; their shares at or below 0.05, 0.01 and 0.001, over every seed, are compared with the binomial 95%
interval of the nominal rate.

``--noise-holds-planted`` draws noise sets from the planted genes too (as random sets are): such a set is associated
with the outcome, so passing it is not a false discovery; those are counted apart (``associated_passed``).

Usage: python bench/significance.py [--seeds 10] [--first-seed 0] [--noise 1000] [--patients 200]
                                    [--permutations 200] [--random-sets 200] [--background-genes 0]
                                    [--gene-noise 0.6] [--noise-holds-planted] [--cv-repeats 2] [--processes 2]
Not a test: it measures.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from gates import GATES, decide_gates, gate_settings, share_at_level

from genesig.logs import configure_logging
from genesig.pipeline.cohort import Cohort, read_cohort
from genesig.pipeline.results import SignatureResult
from genesig.pipeline.settings import GateSettings, TrainSettings
from genesig.pipeline.signatures import GeneSignature
from genesig.pipeline.significance import permutations_per_signature
from genesig.pipeline.synthetic import SyntheticSpec, write_synthetic_cohort

logger = logging.getLogger("bench.significance")
BENCH_DIR = Path(__file__).resolve().parent
PLANTED = {"planted_strong": 2.0, "planted_moderate": 1.5}
LEVELS = (0.05, 0.01, 0.001)


def holds_planted(genes: Iterable[str]) -> bool:
    """Whether a gene set holds a gene of a planted signature."""
    return any(gene.startswith(tuple(PLANTED)) for gene in genes)


def signature_set(noise: int, seed: int, noise_holds_planted: bool = False) -> list[GeneSignature]:
    """The planted signatures, then ``noise`` noise sets drawn from the 4,000 noise genes (and from the planted
    signatures' 20 genes too with ``noise_holds_planted``: as a random set, a noise set may then hold one)."""
    rng = np.random.default_rng(seed)
    planted = [GeneSignature(name, tuple(f"{name}_G{j}" for j in range(10))) for name in PLANTED]
    pool = [f"N{j:05d}" for j in range(4000)]
    if noise_holds_planted:
        pool += [gene for signature in planted for gene in signature.genes]
    sizes = np.round(np.exp(rng.uniform(np.log(3), np.log(100), size=noise))).astype(int)
    noisy = [
        GeneSignature(f"noise_{i:04d}", tuple(pool[j] for j in sorted(rng.choice(len(pool), size=k, replace=False))))
        for i, k in enumerate(sizes)
    ]
    return planted + noisy


def planted_cohort(
    seed: int, args: argparse.Namespace, noise_holds_planted: bool = False
) -> tuple[list[GeneSignature], Cohort]:
    """Seed ``seed``'s signature set (the planted ones first) and its cohort (``args.patients``,
    ``args.background_genes``, ``args.gene_noise``), written as a CSV and read back as a run reads it."""
    signatures = signature_set(args.noise, seed, noise_holds_planted)
    with tempfile.TemporaryDirectory(prefix="genesig-gate-bench-") as tmp:
        data = write_synthetic_cohort(
            Path(tmp) / "cohort.csv",
            signatures,
            SyntheticSpec(
                n_patients=args.patients,
                seed=seed,
                planted=PLANTED,
                background_genes=args.background_genes,
                gene_noise=args.gene_noise,
            ),
        )
        return signatures, read_cohort(data)


def add_cohort_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``planted_cohort`` reads (and the number of seeds)."""
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    parser.add_argument("--noise", type=int, default=1000)
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument(
        "--background-genes",
        type=int,
        default=0,
        help="genes in no signature, added to the 4,000 noise genes and 20 planted ones (16000: genome-wide)",
    )
    parser.add_argument(
        "--gene-noise",
        type=float,
        default=SyntheticSpec().gene_noise,
        help="SD of each gene's own noise (log scale): 0.6 makes planted signatures more coherent (mean within-set "
        "r ~0.3) than real Hallmark sets, 1.2 as coherent as the most coherent of them (~0.15)",
    )


def one_seed(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    configure_logging("WARNING")
    signatures, cohort = planted_cohort(seed, args, args.noise_holds_planted)
    train = TrainSettings(seed=seed, cv_repeats=args.cv_repeats)
    decided = decide_gates(
        signatures, cohort, train, gate_settings(args.fdr, args.permutations, args.random_sets), min_coverage=0.5
    )

    def tally(rows: list[SignatureResult]) -> dict[str, float]:
        pairs = list(zip(rows, signatures, strict=True))
        planted = sum(r.passed for r, _ in pairs if r.signature in PLANTED)
        associated = sum(r.passed for r, s in pairs if r.signature not in PLANTED and holds_planted(s.genes))
        noise = sum(r.passed for r, s in pairs if r.signature not in PLANTED and not holds_planted(s.genes))
        return {
            "planted_passed": planted,
            "noise_passed": noise,
            "associated_passed": associated,
            "fdp": noise / (planted + noise + associated) if noise else 0.0,
        }

    null_p = [r.p_value for r, s in zip(decided.gates["default"], signatures, strict=True)
              if r.signature not in PLANTED and not holds_planted(s.genes) and r.p_value is not None]  # fmt: skip
    return {
        "seed": seed,
        **{name: tally(rows) for name, rows in decided.gates.items()},
        "noise_p_at_or_below": {str(level): sum(p <= level for p in null_p) for level in LEVELS},
        "noise_p_count": len(null_p),
        "permutations_per_signature": permutations_per_signature(len(signatures), args.permutations),
        "evaluate_s": round(decided.evaluate_s, 1),
        "competitive_s": round(decided.competitive_s, 1),
        "planted": {
            r.signature: {
                "cv_mean": r.cv_mean,
                "cv_pooled": r.cv_pooled,
                "p": r.p_value,
                "q": r.q_value,
                "competitive_p": r.competitive_p,
                "competitive_q": r.competitive_q,
            }
            for r in decided.gates["default"]
            if r.signature in PLANTED
        },  # fmt: skip
    }


def calibration(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The noise signatures' self-contained p-values, over every seed: the share at or below each level, the binomial
    95% interval of the nominal rate and the interval over seeds (``gates.share_at_level``)."""
    totals = [r["noise_p_count"] for r in runs]
    out: dict[str, Any] = {"p_values": sum(totals)}
    for level in LEVELS:
        below = [r["noise_p_at_or_below"][str(level)] for r in runs]
        out[str(level)] = share_at_level(below, totals, level, "seed")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_cohort_arguments(parser)
    parser.add_argument("--permutations", type=int, default=GateSettings().permutations)
    parser.add_argument("--random-sets", type=int, default=GateSettings().random_sets)
    parser.add_argument(
        "--noise-holds-planted",
        action="store_true",
        help="draw noise sets from the planted genes too, as random sets are: those are counted apart",
    )
    parser.add_argument("--cv-repeats", type=int, default=2)
    parser.add_argument("--fdr", type=float, default=GateSettings().fdr)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "significance.json")
    args = parser.parse_args()
    configure_logging("INFO")
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    if args.processes > 1:
        with ProcessPoolExecutor(max_workers=args.processes) as pool:
            runs = list(pool.map(one_seed, seeds, [args] * args.seeds))
    else:
        runs = [one_seed(seed, args) for seed in seeds]
    summary: dict[str, Any] = {}
    for gate in GATES:
        summary[gate] = {
            "planted_pass_rate": statistics.fmean(r[gate]["planted_passed"] / len(PLANTED) for r in runs),
            "noise_passed_mean": statistics.fmean(r[gate]["noise_passed"] for r in runs),
            "associated_passed_mean": statistics.fmean(r[gate]["associated_passed"] for r in runs),
            "fdp_mean": statistics.fmean(r[gate]["fdp"] for r in runs),
        }
    summary["calibration"] = calibration(runs)
    summary["cost"] = {
        "evaluate_s_mean": statistics.fmean(r["evaluate_s"] for r in runs),
        "competitive_s_mean": statistics.fmean(r["competitive_s"] for r in runs),
    }
    report = {"parameters": {k: str(v) for k, v in vars(args).items()}, "summary": summary, "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"| gate | planted passed | noise passed (of {args.noise:,}), mean | associated passed, mean | "
        "false-discovery proportion, mean |",
        "|---|---|---|---|---|",
    ]
    labels = {"default": "default: threshold + self-contained", "threshold_only": "threshold only",
              "competitive_gate": "competitive gate (default + random sets)"}  # fmt: skip
    for gate in GATES:
        s = summary[gate]
        lines.append(
            f"| {labels[gate]} | {s['planted_pass_rate']:.0%} | {s['noise_passed_mean']:.1f} | "
            f"{s['associated_passed_mean']:.1f} | {s['fdp_mean']:.3f} |"
        )
    sys.stdout.write(
        "\n".join(lines) + "\n" + json.dumps(summary["calibration"]) + "\n" + json.dumps(summary["cost"]) + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
