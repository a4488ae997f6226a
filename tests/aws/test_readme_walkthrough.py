"""The README's SageMaker walkthrough, run as written against the emulators.

The block between ``<!-- walkthrough:start -->`` and ``<!-- walkthrough:end -->`` runs with bash from the
repository's root, with: the emulators' endpoint URLs (moto behind the strict layer for SageMaker; moto itself for
IAM, STS and ECR; rclone for S3); a stand-in ``docker`` (build_and_push.sh's AWS calls are real, the engine is not
what is tested here); a local endpoint over the MME prefix as SageMaker Runtime; and one added line after
``start-set`` that runs the execution's jobs here, because moto runs none. The inputs are the user's four
variables: a synthetic cohort with an effect planted in one Hallmark set, the 50 Hallmark sets, and patients.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from genesig.client import ModelServerClient
from genesig.server_process import free_port

ROOT = Path(__file__).resolve().parents[2]
HALLMARK = ROOT.parent / "shared" / "data" / "msigdb-hallmark-v7.0.gmt"
PLANTED = "HALLMARK_HYPOXIA"
ACCOUNT = "123456789012"  # moto's

FAKE_DOCKER = """#!/usr/bin/env bash
# Stands in for the Docker CLI: records the call, answers what build_and_push.sh reads.
echo "$*" >> "$DOCKER_CALLS"
case "$1" in
  image) echo 500000000 ;;
  login) cat > /dev/null; echo "Login Succeeded" ;;
esac
"""


def walkthrough() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- walkthrough:start -->\s*```bash\n(.*?)```\s*<!-- walkthrough:end -->", text, re.S)
    assert match, "README.md has no walkthrough block"
    return match.group(1)


def with_jobs_run_here(block: str) -> str:
    lines = block.splitlines()
    [at] = [i for i, line in enumerate(lines) if "genesig pipeline start-set" in line]
    lines.insert(at + 1, 'genesig pipeline run-here --execution-arn "$ARN" --no-docker --workdir "$RUN_HERE"')
    return "\n".join(lines) + "\n"


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, str]:
    genesig = str(Path(sys.executable).parent / "genesig")
    cohort, patients = tmp_path / "cohort.csv", tmp_path / "patients.csv"
    for out, seed in ((cohort, 0), (tmp_path / "others.csv", 1)):
        subprocess.run(
            [genesig, "synth", "--out", str(out), "--patients", "240", "--seed", str(seed)]
            # Genome-wide, as a real cohort is: the competitive test's random gene sets are drawn from every gene.
            + ["--signatures", str(HALLMARK), "--plant", f"{PLANTED}=2.0", "--background-genes", "10000"],
            check=True,
            capture_output=True,
        )
    with open(tmp_path / "others.csv", newline="") as src, open(patients, "w", newline="") as dst:
        rows = csv.DictReader(src)
        genes = [c for c in rows.fieldnames or [] if c not in ("Case_ID", "SurvivalStatus")]
        writer = csv.DictWriter(dst, genes, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(itertools.islice(rows, 5))
    return {"COHORT": str(cohort), "SIGNATURES": str(HALLMARK), "PATIENTS": str(patients), "SIGNATURE": PLANTED}


@pytest.fixture
def runtime(aws_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """A local endpoint over the walkthrough's MME prefix, standing in for SageMaker Runtime."""
    port = free_port()
    prefix = f"s3://genesig-{ACCOUNT}-{aws_env['AWS_DEFAULT_REGION']}/genesig/mme/"
    with open(tmp_path / "local-endpoint.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "genesig.cli", "local-endpoint", "--prefix", prefix, "--port", str(port)]
            + ["--cache-dir", str(tmp_path / "cache")],
            env={**os.environ, **aws_env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        with ModelServerClient(url, timeout=5) as client:
            deadline = time.monotonic() + 120
            while not client.ping():
                assert proc.poll() is None and time.monotonic() < deadline, "the local endpoint did not start"
                time.sleep(0.3)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


@pytest.mark.timeout(900)  # the gate's permutations and the random-set test over 50 Hallmark sets, on 2 cores
def test_the_readme_walkthrough_goes_from_nothing_to_a_prediction(
    aws_env: dict[str, str], inputs: dict[str, str], runtime: str, tmp_path: Path
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    env = {
        **os.environ,
        **aws_env,
        **inputs,
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": runtime,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "DOCKER_CALLS": str(tmp_path / "docker-calls"),
        "RUN_HERE": str(tmp_path / "run-here"),
        "TERM": "dumb",
        "COLUMNS": "200",
    }
    env.pop("VIRTUAL_ENV", None)
    script = tmp_path / "walkthrough.sh"
    script.write_text("set -euo pipefail\n" + with_jobs_run_here(walkthrough()))
    try:
        done = subprocess.run(["bash", str(script)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    finally:
        (ROOT / "role-policy.json").unlink(missing_ok=True)
    assert done.returncode == 0, f"walkthrough failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    assert "Traceback" not in done.stderr

    # What the walkthrough made, read back through the APIs.
    bucket = f"genesig-{ACCOUNT}-{aws_env['AWS_DEFAULT_REGION']}"
    session = boto3.Session(
        aws_access_key_id=aws_env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=aws_env["AWS_SECRET_ACCESS_KEY"],
        region_name=aws_env["AWS_DEFAULT_REGION"],
    )
    s3, sm, iam, ecr = (
        session.client(service, endpoint_url=aws_env[f"AWS_ENDPOINT_URL_{service.upper()}"])
        for service in ("s3", "sagemaker", "iam", "ecr")
    )
    role = iam.get_role(RoleName="genesig-sagemaker")["Role"]
    assert "sagemaker.amazonaws.com" in json.dumps(role["AssumeRolePolicyDocument"])
    policy = iam.get_role_policy(RoleName="genesig-sagemaker", PolicyName="genesig")["PolicyDocument"]
    assert f"arn:aws:s3:::{bucket}/*" in json.dumps(policy)
    repositories = {r["repositoryName"] for r in ecr.describe_repositories()["repositories"]}
    assert {"genesig-mme", "genesig-mme-train"} <= repositories
    pushed = (tmp_path / "docker-calls").read_text()
    assert f"push {ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/genesig-mme-train:v1" in pushed

    pipelines = {p["PipelineName"] for p in sm.list_pipelines()["PipelineSummaries"]}
    assert {"genesig-mme", "genesig-mme-set"} <= pipelines
    [execution] = sm.list_pipeline_executions(PipelineName="genesig-mme-set")["PipelineExecutionSummaries"]
    run_id = execution["PipelineExecutionArn"].rsplit("/", 1)[1]
    report = json.loads(s3.get_object(Bucket=bucket, Key=f"genesig/runs/{run_id}/report/report.json")["Body"].read())
    rows = {r["signature"]: r for r in report["signatures"]}
    assert len(rows) == 50
    planted = rows[PLANTED]
    assert planted["outcome"] == "passed" and planted["version"] == 1, planted

    deployed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="genesig/mme/").get("Contents", [])]
    assert f"genesig/mme/{PLANTED}-v1.tar.gz" in deployed
    endpoint = sm.describe_endpoint(EndpointName="genesig-mme")
    assert endpoint["EndpointStatus"] == "InService"
    # The prediction: the planted signature's deployed model, one probability and risk group per patient.
    assert f"{PLANTED} v1: probability" in done.stdout, done.stdout[-3000:]
    prediction = done.stdout[done.stdout.index(f"{PLANTED} v1: probability") :]
    assert len(re.findall(r"\b[01]\.\d{4}\s.*\b(?:high|low|medium)", prediction)) == 5, prediction


def test_the_role_policy_allows_every_sagemaker_call_the_jobs_make() -> None:
    """The role's policy names each SageMaker operation that the jobs' code (register, deploy) calls."""
    policy = json.loads((ROOT / "docs" / "aws" / "role-policy.json").read_text())
    allowed = {
        action
        for statement in policy["Statement"]
        for action in ([statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"])
    }
    job_code = (ROOT / "pipeline" / "sagemaker" / "registry.py").read_text()
    called = {
        "sagemaker:" + "".join(part.title() for part in op.split("_"))
        for op in re.findall(r"\bsm\.([a-z_]+)\b", job_code)
    }
    called |= {
        "sagemaker:" + "".join(part.title() for part in op.split("_"))
        for op in re.findall(r"call\([^,]+,\s*sm\.([a-z_]+)", job_code)
    }
    called |= {
        "sagemaker:" + "".join(part.title() for part in op.split("_"))
        for op in re.findall(r'paginate\([^)]*?sm,\s*"([a-z_]+)"', job_code, re.S)
    }
    assert {"sagemaker:CreateModelPackage", "sagemaker:ListModelPackages"} <= called, called
    missing = sorted(called - allowed)
    assert not missing, f"docs/aws/role-policy.json lacks {missing}"
