"""Training-side scale benchmark: run-local over many gene sets; wall time, per-signature time, peak memory.

Builds a synthetic cohort that has every gene of the chosen sets (effects planted in two of
them), then runs the whole local pipeline for the first N sets, for several N, each in a fresh
process so that peak memory is per run.

Usage: python bench/training.py [--gmt ../shared/data/msigdb-hallmark-v7.0.gmt] [--counts 10,25,50]
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_GMT = BENCH_DIR.parents[1] / "shared" / "data" / "msigdb-hallmark-v7.0.gmt"
logger = logging.getLogger("bench.training")


def one_run(gmt: Path, count: int, work: Path, patients: int, cv_repeats: int) -> dict[str, float]:
    """In this process: write the cohort and gene sets, run run-local, report time and peak RSS."""
    from genesig.pipeline.run import RunOptions, run_local
    from genesig.pipeline.signatures import read_signatures
    from genesig.pipeline.synthetic import SyntheticSpec, write_synthetic_cohort

    signatures = read_signatures(gmt)[:count]
    planted = {signatures[0].name: 1.5, signatures[1].name: 1.0}
    data = write_synthetic_cohort(work / "cohort.csv", signatures, SyntheticSpec(n_patients=patients, planted=planted))
    subset = work / "sets.json"
    subset.write_text(json.dumps({s.name: list(s.genes) for s in signatures}))
    started = time.perf_counter()
    summary = run_local(
        RunOptions(data=data, workdir=work / "w", signatures_file=subset, approve=True, cv_repeats=cv_repeats)
    )
    seconds = time.perf_counter() - started
    return {
        "signatures": count,
        "genes_in_cohort": len({g for s in signatures for g in s.genes}),
        "wall_s": round(seconds, 2),
        "per_signature_s": round(seconds / count, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "passed": sum(r.passed for r in summary.results),
        "failed_or_skipped": sum(r.status != "done" for r in summary.results),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gmt", type=Path, default=DEFAULT_GMT)
    parser.add_argument("--counts", default="10,25,50")
    parser.add_argument("--patients", type=int, default=120)
    parser.add_argument("--cv-repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "training.json")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.child:
        with tempfile.TemporaryDirectory(prefix="genesig-train-bench-") as tmp:
            sys.stdout.write(json.dumps(one_run(args.gmt, args.child, Path(tmp), args.patients, args.cv_repeats)))
        return 0
    rows = []
    for count in (int(c) for c in args.counts.split(",")):
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                str(count),
                "--gmt",
                str(args.gmt),
                "--patients",
                str(args.patients),
                "--cv-repeats",
                str(args.cv_repeats),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        rows.append(json.loads(out))
        sys.stderr.write(f"{rows[-1]}\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"gmt": args.gmt.name, "patients": args.patients, "cv_repeats": args.cv_repeats, "runs": rows}, indent=2
        )
        + "\n"
    )
    lines = [
        "| signatures | genes in cohort | wall (s) | per signature (s) | peak RSS (MB) | passed gate |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['signatures']} | {r['genes_in_cohort']} | {r['wall_s']} | {r['per_signature_s']} | "
        f"{r['peak_rss_mb']} | {r['passed']} |"
        for r in rows
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
