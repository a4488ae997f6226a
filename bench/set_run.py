"""The signature-set run end to end on this machine, beside run-local on the same data in the same run.

Starts moto (behind the tests' strict layer, which also counts the SageMaker requests) and an S3 server,
writes a synthetic cohort that has every gene of the first N gene sets (GO biological process by default),
upserts the pipelines, starts one signature-set execution and runs its jobs here as SageMaker would
(``genesig.pipeline.sagemaker.run_here``): in the training image with Docker (``--image``), or in this Python
environment (``--no-docker``). Then approves by rule from the run report and syncs the approved models into
the MME prefix. Reported: wall time of each step and of the whole, the peak extra memory of the machine
(containers included), the SageMaker jobs and instances the run asked AWS for (counted from the requests the
emulator received), the outcomes; and run-local's wall time and peak memory on the same cohort and sets.

Usage: python bench/set_run.py [--count 1000] [--shards 4] [--image genesig-mme-train:TAG | --no-docker]
       python bench/set_run.py --report          # the README table from bench/results/set_run.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO))
DEFAULT_GMT = REPO.parent / "shared" / "data" / "go-biological-process-2021.gmt"
RESULTS = BENCH_DIR / "results" / "set_run.json"
ROLE = "arn:aws:iam::123456789012:role/genesig-sagemaker"
logger = logging.getLogger("bench.set_run")


class MachineMemory(threading.Thread):
    """Peak of the machine's used memory (MemTotal - MemAvailable) above what it was at the start: it sees
    containers, which are not this process's children."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.base = self._used()
        self.peak = 0
        self.stop = threading.Event()

    @staticmethod
    def _used() -> int:
        info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        return (int(info["MemTotal"].split()[0]) - int(info["MemAvailable"].split()[0])) * 1024

    def run(self) -> None:
        while not self.stop.wait(0.5):
            self.peak = max(self.peak, self._used() - self.base)

    def finish(self) -> float:
        self.stop.set()
        self.join()
        return round(self.peak / 1e6, 1)


@contextlib.contextmanager
def emulators(workdir: Path) -> Iterator[tuple[dict[str, str], Any]]:
    """moto behind the strict layer, and rclone's S3 server; the environment that reaches them."""
    from genesig.server_process import free_port
    from tests.emulators import ACCESS_KEY, REGION, SECRET_KEY, _stop, _wait, strict_moto

    port = free_port()
    (workdir / "s3").mkdir(parents=True)
    s3 = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "rclone"),
            "serve",
            "s3",
            "--addr",
            f"127.0.0.1:{port}",
            "--auth-key",
            f"{ACCESS_KEY},{SECRET_KEY}",
            "--config",
            "/dev/null",
            str(workdir / "s3"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait(f"http://127.0.0.1:{port}/", s3)
        with strict_moto(workdir / "moto.log") as (sagemaker_url, strict):
            env = {
                "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_DEFAULT_REGION": REGION,
                "AWS_ENDPOINT_URL_SAGEMAKER": sagemaker_url,
                "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}",
            }
            yield env, strict
    finally:
        _stop(s3)


def write_inputs(gmt: Path, count: int, patients: int, folder: Path) -> tuple[Path, Path]:
    from genesig.pipeline.signatures import read_signatures
    from genesig.pipeline.synthetic import SyntheticSpec, write_synthetic_cohort

    signatures = read_signatures(gmt)[:count]
    sets = folder / "signatures.json"
    sets.write_text(json.dumps({s.name: list(s.genes) for s in signatures}))
    planted = {signatures[0].name: 1.5, signatures[1].name: 1.0}
    cohort = write_synthetic_cohort(
        folder / "cohort.csv", signatures, SyntheticSpec(n_patients=patients, planted=planted)
    )
    return cohort, sets


def set_run(args: argparse.Namespace, cohort: Path, sets: Path, work: Path) -> dict[str, Any]:
    from genesig.pipeline.approval import approve_by_rule, parse_rule, read_report
    from genesig.pipeline.run import load_signatures
    from genesig.pipeline.sagemaker.aws import client, s3_join
    from genesig.pipeline.sagemaker.executions import start_set, upsert_pipeline
    from genesig.pipeline.sagemaker.pipeline import PipelineConfig
    from genesig.pipeline.sagemaker.registry import sync
    from genesig.pipeline.sagemaker.run_here import DockerRunner, LocalPipelineRunner, ProcessRunner

    with emulators(work) as (env, strict):
        os.environ.update(env)
        sm, s3 = client("sagemaker"), client("s3")
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        s3.create_bucket(Bucket=bucket)
        config = PipelineConfig(
            role_arn=ROLE,
            bucket=bucket,
            training_image_uri=args.image or "not-used",
            serving_image_uri="123456789012.dkr.ecr.us-east-1.amazonaws.com/genesig-mme:bench",
        )
        upsert_pipeline(sm, s3, config, load_signatures(sets))
        s3.put_object(Bucket=bucket, Key="genesig/data/cohort.csv", Body=cohort.read_bytes())
        s3.put_object(Bucket=bucket, Key="genesig/signatures/signatures.json", Body=sets.read_bytes())
        memory = MachineMemory()
        memory.start()
        started = time.perf_counter()
        parameters = {
            "MetricThreshold": str(args.threshold), "Permutations": str(args.permutations),
            "Competitive": args.competitive,
        }  # fmt: skip
        arn = start_set(sm, config.set_name, {"ShardCount": str(args.shards), **parameters})
        runner = DockerRunner() if args.image else ProcessRunner()
        record = LocalPipelineRunner(sm, s3, runner, work / "runs").run(arn)
        run_seconds = time.perf_counter() - started
        if record.status != "Succeeded":
            raise SystemExit(f"the set run failed: {[(s.name, s.failure_reason) for s in record.steps]}")
        report_uri = s3_join(config.base_uri, "runs", arn.rsplit("/", 1)[1], "report", "report.json")
        report = read_report(report_uri, s3)
        decisions = approve_by_rule(sm, report, parse_rule(args.where), reason="benchmark")
        synced = sync(sm, s3, config.mme_prefix)
        total_seconds = time.perf_counter() - started
        peak = memory.finish()
        return {
            "runner": "docker: " + args.image if args.image else "this Python environment",
            "wall_s": round(run_seconds, 1),
            "wall_with_approval_and_sync_s": round(total_seconds, 1),
            "steps": {s.name: round(s.seconds, 1) for s in record.steps},
            "peak_extra_memory_mb": peak,
            "sagemaker_requests": {k: v for k, v in sorted(strict.operations.items())},
            "jobs_on_aws": strict.operations["CreateProcessingJob"] + strict.operations["CreateTrainingJob"],
            "instances_on_aws": strict.instances,
            "outcomes": report["run"]["counts"],
            "registered": report["run"]["registered"],
            "approved": sum(d.action == "approved" for d in decisions),
            "deployed": sum(d.action == "deployed" for d in synced),
        }


def run_local_beside(args: argparse.Namespace, cohort: Path, sets: Path, work: Path) -> dict[str, Any]:
    from genesig.pipeline.run import RunOptions, run_local
    from genesig.pipeline.settings import GateSettings

    memory = MachineMemory()
    memory.start()
    started = time.perf_counter()
    summary = run_local(
        RunOptions(
            data=cohort,
            workdir=work,
            signatures_file=sets,
            jobs=0,
            gate=GateSettings(threshold=args.threshold, permutations=args.permutations, competitive=args.competitive),
        )
    )
    return {
        "wall_s": round(time.perf_counter() - started, 1),
        "peak_extra_memory_mb": memory.finish(),
        "passed": sum(r.passed for r in summary.results),
    }


def report_table(doc: dict[str, Any]) -> str:
    r, local = doc["set_run"], doc["run_local"]
    after = round(r["wall_with_approval_and_sync_s"] - r["wall_s"], 1)
    lines = [
        f"| {doc['count']} GO sets, {doc['patients']} patients, {doc['shards']} shards | wall | peak extra memory | "
        "SageMaker jobs (instances) it would create | passed / registered / approved / deployed |",
        "|---|---|---|---|---|",
        f"| signature-set run ({r['runner']}) | {r['wall_s']} s (+{after} s approval and sync) | "
        f"{r['peak_extra_memory_mb']} MB | {r['jobs_on_aws']} ({r['instances_on_aws']}) | "
        f"{r['outcomes'].get('passed', 0)} / {r['registered']} / {r['approved']} / {r['deployed']} |",
        f"| run-local, same cohort and sets, `--jobs 0` | {local['wall_s']} s | {local['peak_extra_memory_mb']} MB "
        f"| – | {local['passed']} / – / – / – |",
    ]
    steps = ", ".join(f"{k} {v} s" for k, v in r["steps"].items())
    return "\n".join(lines) + f"\n\nSteps: {steps}.\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gmt", type=Path, default=DEFAULT_GMT)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--patients", type=int, default=120)
    parser.add_argument(
        "--permutations", type=int, default=0, help="the gate's outcome permutations (0 here: the run's own cost)"
    )
    parser.add_argument(
        "--competitive", choices=("report", "gate", "off"), default="off", help="the competitive test (off here)"
    )
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--threshold", type=float, default=0.6)
    parser.add_argument("--where", default="cv_mean >= 0.65 and test >= 0.6", help="the approval rule")
    parser.add_argument("--image", help="the training image (jobs in Docker); default: --no-docker")
    parser.add_argument("--no-docker", action="store_true")
    parser.add_argument("--report", action="store_true", help="print the table from the last results")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.report:
        sys.stdout.write(report_table(json.loads(RESULTS.read_text())))
        return 0
    if not args.image and not args.no_docker:
        parser.error("give --image IMAGE (jobs in the training image) or --no-docker")
    with tempfile.TemporaryDirectory(prefix="genesig-set-bench-") as tmp:
        work = Path(tmp)
        cohort, sets = write_inputs(args.gmt, args.count, args.patients, work)
        doc = {
            "count": args.count,
            "patients": args.patients,
            "shards": args.shards,
            "threshold": args.threshold,
            "machine": {"cpus": os.cpu_count()},
            "set_run": set_run(args, cohort, sets, work / "set"),
            "run_local": run_local_beside(args, cohort, sets, work / "local"),
        }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=2) + "\n")
    sys.stdout.write(report_table(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
