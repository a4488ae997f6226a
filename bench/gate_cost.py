"""What the default gate costs: run-local with the default gate against the same run with the threshold alone.

Two workloads, each run as a user runs it (``genesig run-local``, a fresh process, ``--jobs`` as given):

- ``builtins``: the 7 built-in signatures on the seed cohort (``../shared/data/nsclc-metagenes-119.csv``);
- ``go``: the first ``--go-count`` GO biological-process sets (all 6,036 by default) on a synthetic 120-patient cohort
  holding every gene of the file (``bench/training.py``'s cohort).

Modes, alternated so that a noisy machine weighs on both alike: ``threshold`` (``--permutations 0 --competitive
off``), ``permutations`` (the self-contained test alone: ``--competitive off``) and ``default`` (the product's
defaults: 200 permutations shared over the run, the competitive test reported with its default random sets).
Reported per mode: wall seconds (median and max over ``--repeats``) and the ratio of the medians to the
threshold-only run.

Usage: python bench/gate_cost.py [--workloads builtins,go] [--repeats 5] [--go-repeats 1] [--go-count 6036]
                                 [--jobs 1] [--go-jobs 2] [--go-modes threshold,default]
Not a test: it measures.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from training import DEFAULT_GMT, write_cohort

BENCH_DIR = Path(__file__).resolve().parent
SEED_COHORT = BENCH_DIR.parents[1] / "shared" / "data" / "nsclc-metagenes-119.csv"
GENESIG = Path(sys.executable).with_name("genesig")
MODES = {
    "threshold": ["--permutations", "0", "--competitive", "off"],
    "permutations": ["--competitive", "off"],
    "default": [],
}
logger = logging.getLogger("bench.gate_cost")


def first_sets(gmt: Path, count: int, out: Path) -> Path:
    """The first ``count`` gene sets of ``gmt`` as their own file."""
    with gmt.open() as source, out.open("w") as sink:
        for i, line in enumerate(source):
            if i >= count:
                break
            sink.write(line)
    return out


def one_run(data: Path, signatures: Path | None, jobs: int, mode: str, workdir: Path) -> dict[str, float]:
    """One run-local in a fresh process: its wall seconds."""
    started = time.perf_counter()
    subprocess.run(
        [str(GENESIG), "run-local", "--data", str(data), "--workdir", str(workdir), "--jobs", str(jobs), "--quiet"]
        + (["--signatures", str(signatures)] if signatures else [])
        + MODES[mode],
        check=True,
        capture_output=True,
    )
    return {"wall_s": time.perf_counter() - started}


def workload(
    name: str, data: Path, signatures: Path | None, jobs: int, repeats: int, tmp: Path, modes: list[str]
) -> dict[str, Any]:
    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    for repeat in range(repeats):
        for mode in modes:
            workdir = tmp / f"{name}-{mode}-{repeat}"
            runs[mode].append(one_run(data, signatures, jobs, mode, workdir))
            logger.warning("%s %s %d: %s", name, mode, repeat, runs[mode][-1])
    median = {mode: statistics.median(r["wall_s"] for r in rows) for mode, rows in runs.items()}
    return {
        "jobs": jobs,
        "repeats": repeats,
        "modes": {
            mode: {
                "wall_median_s": round(median[mode], 2),
                "wall_max_s": round(max(r["wall_s"] for r in rows), 2),
                "wall_ratio": round(median[mode] / median["threshold"], 2),
            }
            for mode, rows in runs.items()
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default="builtins,go")
    parser.add_argument("--repeats", type=int, default=5, help="repeats of the built-ins workload")
    parser.add_argument("--go-repeats", type=int, default=1)
    parser.add_argument("--go-count", type=int, default=6036)
    parser.add_argument("--jobs", type=int, default=1, help="run-local --jobs of the built-ins (its default)")
    parser.add_argument("--go-jobs", type=int, default=2)
    parser.add_argument("--go-modes", default="threshold,default", help="modes of the GO workload (each a long run)")
    parser.add_argument("--gmt", type=Path, default=DEFAULT_GMT)
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "gate-cost.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    chosen = args.workloads.split(",")
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count()}}
    with tempfile.TemporaryDirectory(prefix="genesig-gate-cost-") as name:
        tmp = Path(name)
        if "builtins" in chosen:
            results["builtins"] = {
                "cohort": SEED_COHORT.name,
                **workload("builtins", SEED_COHORT, None, args.jobs, args.repeats, tmp, list(MODES)),
            }
        if "go" in chosen:
            cohort = tmp / "go-cohort.csv"
            write_cohort(args.gmt, cohort, 120)
            sets = first_sets(args.gmt, args.go_count, tmp / "go.gmt")
            results["go"] = {
                "signatures": args.go_count,
                "patients": 120,
                **workload("go", cohort, sets, args.go_jobs, args.go_repeats, tmp, args.go_modes.split(",")),
            }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    lines = ["| workload | mode | wall median (s) | wall max (s) | × threshold-only |", "|---|---|---|---|---|"]
    for key in ("builtins", "go"):
        for mode, row in results.get(key, {}).get("modes", {}).items():
            lines.append(f"| {key} | {mode} | {row['wall_median_s']} | {row['wall_max_s']} | {row['wall_ratio']} |")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
