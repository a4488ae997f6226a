"""Training-side scale benchmark: run-local over many gene sets; wall time, per-signature time, peak memory.

Builds one synthetic cohort that has every gene of the whole gene-set file (effects planted in
two sets), then runs the whole local pipeline (preprocess, 5x5 CV, train, evaluate with a
report, gate, register, deploy) for the first N sets, for several N, each in a fresh process so
that peak memory is per run. ``--threshold 0`` opens the gate, so every model is registered and
deployed (the worst case for the pipeline, and the prefix the serving benchmark needs):
``--keep DIR`` keeps each run's work folder (DIR/<N>/mme-prefix).

Usage: python bench/training.py [--gmt ../shared/data/go-biological-process-2021.gmt]
                                [--counts 100,300,1000] [--jobs 2] [--threshold 0] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_GMT = BENCH_DIR.parents[1] / "shared" / "data" / "go-biological-process-2021.gmt"
logger = logging.getLogger("bench.training")


def write_cohort(gmt: Path, out: Path, patients: int) -> None:
    """One cohort with every gene of the file, shared by all runs so that only the signature count varies."""
    from genesig.pipeline.signatures import read_signatures
    from genesig.pipeline.synthetic import SyntheticSpec, write_synthetic_cohort

    signatures = read_signatures(gmt)
    planted = {signatures[0].name: 1.5, signatures[1].name: 1.0}
    write_synthetic_cohort(out, signatures, SyntheticSpec(n_patients=patients, planted=planted))


class TreeMemory(threading.Thread):
    """Peak PSS of this process and its descendants (the --jobs workers), sampled every 0.5 s."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_bytes = 0
        self.stop = threading.Event()

    def run(self) -> None:
        import psutil

        from genesig.container.memory import pss_bytes

        me = psutil.Process()
        while not self.stop.wait(0.5):
            pids = [me.pid] + [p.pid for p in me.children(recursive=True)]
            self.peak_bytes = max(self.peak_bytes, sum(pss_bytes(pid) for pid in pids))


def one_run(args: argparse.Namespace, cohort: Path, work: Path) -> dict[str, float]:
    """In this process: run run-local on the first N sets, report time and peak memory (PSS, all processes)."""
    from genesig.pipeline.run import RunOptions, run_local
    from genesig.pipeline.settings import GateSettings, TrainSettings
    from genesig.pipeline.signatures import read_signatures

    signatures = read_signatures(args.gmt)[: args.child]
    subset = work / "sets.json"
    subset.write_text(json.dumps({s.name: list(s.genes) for s in signatures}))
    memory = TreeMemory()
    memory.start()
    started = time.perf_counter()
    summary = run_local(
        RunOptions(
            data=cohort,
            workdir=work,
            signatures_file=subset,
            approve=True,
            train=TrainSettings(cv_repeats=args.cv_repeats, l2=args.l2),
            gate=GateSettings(
                threshold=args.threshold, permutations=args.permutations, competitive=args.competitive,
                random_sets=args.random_sets,
            ),  # fmt: skip
            jobs=args.jobs,
        )
    )
    seconds = time.perf_counter() - started
    memory.stop.set()
    memory.join()
    return {
        "signatures": args.child,
        "genes_in_signatures": len({g for s in signatures for g in s.genes}),
        "jobs": args.jobs,
        "wall_s": round(seconds, 2),
        "per_signature_s": round(seconds / args.child, 3),
        "signatures_per_minute": round(60 * args.child / seconds, 1),
        "peak_rss_main_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_pss_all_processes_mb": round(memory.peak_bytes / 1e6, 1),
        "passed": sum(r.passed for r in summary.results),
        "deployed": sum(r.deployed is not None for r in summary.results),
        "failed_or_skipped": sum(not r.evaluated for r in summary.results),
        "output_mb": round(sum(p.stat().st_size for p in work.rglob("*") if p.is_file()) / 1e6, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gmt", type=Path, default=DEFAULT_GMT)
    parser.add_argument("--counts", default="100,300,1000")
    parser.add_argument("--patients", type=int, default=120)
    parser.add_argument("--cv-repeats", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=2, help="run-local --jobs")
    parser.add_argument("--threshold", type=float, default=0.0, help="gate threshold (0: deploy every model)")
    parser.add_argument("--l2", type=float, help="a fixed ridge penalty (default: chosen by the nested inner CV)")
    parser.add_argument(
        "--permutations",
        type=int,
        default=0,
        help="the gate's outcome permutations (0, the default here: the threshold alone; the product's default is 200)",
    )
    parser.add_argument(
        "--competitive",
        choices=("report", "gate", "off"),
        default="off",
        help="the competitive test (off, the default here; the product's default is report)",
    )
    parser.add_argument(
        "--random-sets", type=int, default=200, help="random gene sets in the competitive test (the product's default)"
    )
    parser.add_argument("--keep", type=Path, help="keep each run's work folder as KEEP/<count>")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "training.json")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cohort", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.child:
        sys.stdout.write(json.dumps(one_run(args, args.cohort, args.workdir)))
        return 0
    rows = []
    with tempfile.TemporaryDirectory(prefix="genesig-train-bench-") as tmp:
        cohort = Path(tmp) / "cohort.csv"
        write_cohort(args.gmt, cohort, args.patients)
        for count in (int(c) for c in args.counts.split(",")):
            workdir = (args.keep / str(count)) if args.keep else Path(tmp) / str(count)
            if workdir.exists():
                raise SystemExit(f"{workdir} exists: the benchmark needs an empty work folder")
            workdir.mkdir(parents=True)
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(count), "--cohort", str(cohort), "--workdir", str(workdir)]
                + ["--gmt", str(args.gmt), "--patients", str(args.patients), "--cv-repeats", str(args.cv_repeats)]
                + ["--jobs", str(args.jobs), "--threshold", str(args.threshold)]
                + ["--permutations", str(args.permutations), "--competitive", args.competitive]
                + ["--random-sets", str(args.random_sets)]
                + (["--l2", str(args.l2)] if args.l2 is not None else []),
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            rows.append(json.loads(out))
            logger.warning("%s", rows[-1])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "gmt": args.gmt.name,
                "patients": args.patients,
                "cv_repeats": args.cv_repeats,
                "threshold": args.threshold,
                "l2": "inner_cv" if args.l2 is None else args.l2,
                "permutations": args.permutations,
                "competitive": args.competitive,
                "random_sets": args.random_sets,
                "machine": {"cpus": os.cpu_count()},
                "runs": rows,
            },
            indent=2,
        )
        + "\n"
    )
    lines = [
        "| signatures | genes | jobs | wall (s) | per signature (s) | signatures/min |"
        " peak memory, all processes (MB) | deployed | output (MB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['signatures']} | {r['genes_in_signatures']} | {r['jobs']} | {r['wall_s']} | {r['per_signature_s']} | "
        f"{r['signatures_per_minute']} | {r['peak_pss_all_processes_mb']} | {r['deployed']} | "
        f"{r['output_mb']} |"
        for r in rows
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
