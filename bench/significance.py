"""Gate benchmark: does the random-signature null with false-discovery control keep noise out and signal in?

Planted cohorts (default 200 patients, binary outcome): two planted signatures of 10 genes (effects 2.0 and 1.5
log-odds per SD of their activity) among 1,000 noise gene sets of mixed sizes (3 to 100 genes, log-uniform, drawn
from 4,000 noise genes), for several seeds. Every signature goes through the gate's own code, as run-local runs it:
matched against the data, preprocessed, cross-validated (the threshold's metric: CV mean; the null's: the pooled
out-of-fold metric), compared with the random-signature null of its size (R random gene sets, shared by size bin),
then Benjamini-Hochberg over the run and the gate (metric >= threshold and q <= FDR). The final model fit, held-out
scoring and report of a run-local run are left out: they do not change the verdict, and they would make 10 seeds x
1,002 signatures take hours.

Reported per seed and on average, for the gate with the null and FDR and for the threshold-only gate it replaces
(same signatures, same CV values): planted signatures passed, noise signatures passed, and the realised
false-discovery proportion (noise passed / all passed).

Also reported: how many planted genes are among the null's top genes (the genes best at discriminating alone,
whose random sets the null draws as a stratum of their own) and how many of the null's random sets hold a planted
gene. Random sets are drawn from every gene of the cohort, so a random set holding one planted gene is a competitor
the signature must beat; ``--background-genes`` adds genes in no signature (16,000: a genome-wide cohort), which
makes such sets rarer. How much power any calibrated test of this null can have on these cohorts:
``bench/significance_bound.py``.

Usage: python bench/significance.py [--seeds 10] [--first-seed 0] [--noise 1000] [--patients 200]
                                    [--replicates 100] [--background-genes 0] [--gene-noise 0.6] [--noise-holds-planted]
                                    [--cv-repeats 2] [--processes 2]
Not a test: it measures.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from genesig.logs import configure_logging
from genesig.pipeline.cohort import Cohort, read_cohort
from genesig.pipeline.run import SignatureResult
from genesig.pipeline.settings import GateSettings, TrainSettings
from genesig.pipeline.signatures import GeneSignature, match
from genesig.pipeline.significance import RandomSignatureNull, attach_p_values, gate_run
from genesig.pipeline.steps import cross_validate, preprocess
from genesig.pipeline.synthetic import SyntheticSpec, write_synthetic_cohort

logger = logging.getLogger("bench.significance")
BENCH_DIR = Path(__file__).resolve().parent
PLANTED = {"planted_strong": 2.0, "planted_moderate": 1.5}


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


def null_contamination(null: RandomSignatureNull, sizes: list[int]) -> dict[str, int]:
    """How the null meets the planted genes: how many of them are among its top genes (the genes best at
    discriminating alone, whose random sets are a stratum of their own), and how many of the random sets drawn in
    each stratum hold one."""
    drawn = [null.random_sets(size) for size in sizes]  # (holding, rest) of each size, drawn once
    holding = [genes for sets, _ in drawn for genes in sets]
    rest = [genes for _, sets in drawn for genes in sets]
    return {
        "top_genes": len(null.top_genes),
        "planted_among_top_genes": sum(holds_planted([gene]) for gene in null.top_genes),
        "random_sets": len(holding) + len(rest),
        "holding_a_planted_gene": sum(map(holds_planted, holding + rest)),
        "top_stratum_sets": len(holding),
        "top_stratum_sets_holding_a_planted_gene": sum(map(holds_planted, holding)),
    }


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
    """The options ``planted_cohort`` reads (and the number of seeds), shared by the gate benchmarks."""
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
    gate = GateSettings(threshold=args.threshold, fdr=args.fdr, null_replicates=args.replicates)
    with tempfile.TemporaryDirectory(prefix="genesig-gate-bench-") as tmp:
        started = time.perf_counter()
        results = []
        for signature in signatures:
            matched = match(signature, cohort.candidate_genes(), 2, 0.5)
            result = SignatureResult.of(matched, "done")
            cv = cross_validate(preprocess(cohort, matched, settings=train), train)
            result.metric, result.cv_mean, result.cv_pooled = cv.metric, cv.mean, cv.pooled_mean
            result.threshold_passed = cv.mean >= gate.threshold
            verdict = ">=" if result.threshold_passed else "<"
            result.threshold_reason = f"cross-validated mean {cv.metric} {cv.mean:.3f} {verdict} threshold"
            results.append(result)
        evaluated_s = time.perf_counter() - started
        null = RandomSignatureNull(cohort, train, None, args.replicates, Path(tmp) / "null")
        attach_p_values(results, null)
        null_s = time.perf_counter() - started - evaluated_s
        gate_run(results, gate)
        contamination = null_contamination(null, sorted({r.null_size for r in results if r.null_size}))

    def tally(passed: list[bool]) -> dict[str, float]:
        planted = sum(p for p, r in zip(passed, results, strict=True) if r.signature in PLANTED)
        noise = sum(p for p, r in zip(passed, results, strict=True) if r.signature not in PLANTED)
        holding = sum(
            p
            for p, r, s in zip(passed, results, signatures, strict=True)
            if r.signature not in PLANTED and holds_planted(s.genes)
        )
        return {
            "planted_passed": planted,
            "noise_passed": noise,
            "noise_passed_holding_a_planted_gene": holding,
            "fdp": noise / (planted + noise) if noise else 0.0,
        }

    return {
        "seed": seed,
        "null_and_fdr": tally([r.passed for r in results]),
        "threshold_only": tally([r.threshold_passed for r in results]),
        "evaluate_s": round(evaluated_s, 1),
        "null_s": round(null_s, 1),
        "null_sizes": len({r.null_size for r in results}),
        "null_contamination": contamination,
        "planted": {
            r.signature: {"cv_mean": r.cv_mean, "cv_pooled": r.cv_pooled, "p": r.p_value, "q": r.q_value}
            for r in results
            if r.signature in PLANTED
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_cohort_arguments(parser)
    parser.add_argument("--replicates", type=int, default=100)
    parser.add_argument(
        "--noise-holds-planted",
        action="store_true",
        help="draw noise sets from the planted genes too, as random sets are: passing one counts as a false discovery",
    )
    parser.add_argument("--cv-repeats", type=int, default=2)
    parser.add_argument("--threshold", type=float, default=GateSettings().threshold)
    parser.add_argument("--fdr", type=float, default=GateSettings().fdr)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "significance.json")
    args = parser.parse_args()
    configure_logging("INFO")
    with ProcessPoolExecutor(max_workers=args.processes) as pool:
        seeds = range(args.first_seed, args.first_seed + args.seeds)
        runs = list(pool.map(one_seed, seeds, [args] * args.seeds))
    summary = {}
    for gate in ("null_and_fdr", "threshold_only"):
        summary[gate] = {
            "planted_pass_rate": statistics.fmean(r[gate]["planted_passed"] / len(PLANTED) for r in runs),
            "noise_passed_mean": statistics.fmean(r[gate]["noise_passed"] for r in runs),
            "fdp_mean": statistics.fmean(r[gate]["fdp"] for r in runs),
        }
    summary["null_contamination"] = {
        "share_of_random_sets_holding_a_planted_gene": statistics.fmean(
            r["null_contamination"]["holding_a_planted_gene"] / r["null_contamination"]["random_sets"] for r in runs
        ),
        "planted_among_top_genes_mean": statistics.fmean(
            r["null_contamination"]["planted_among_top_genes"] for r in runs
        ),
    }
    summary["cost"] = {
        "evaluate_s_mean": statistics.fmean(r["evaluate_s"] for r in runs),
        "null_s_mean": statistics.fmean(r["null_s"] for r in runs),
    }
    report = {"parameters": {k: str(v) for k, v in vars(args).items()}, "summary": summary, "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"| gate | planted passed | noise passed (of {args.noise:,}), mean | false-discovery proportion, mean |",
        "|---|---|---|---|",
    ]
    for gate, label in (("null_and_fdr", "null + FDR (new)"), ("threshold_only", "threshold only (before)")):
        s = summary[gate]
        lines.append(f"| {label} | {s['planted_pass_rate']:.0%} | {s['noise_passed_mean']:.1f} | {s['fdp_mean']:.3f} |")
    sys.stdout.write(
        "\n".join(lines) + "\n" + json.dumps(summary["null_contamination"]) + "\n" + json.dumps(summary["cost"]) + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
