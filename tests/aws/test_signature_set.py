"""The signature-set run end to end against moto (behind the strict layer) and the S3 server: upsert, one
execution over a signature set, its three jobs run here in SageMaker's layout (genesig.pipeline.sagemaker.run_here,
this Python environment), the report, the registrations, approval by rule and sync."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from genesig.pipeline.sagemaker import executions
from genesig.pipeline.sagemaker.aws import read_object, s3_join
from genesig.pipeline.sagemaker.names import names_for
from genesig.pipeline.sagemaker.pipeline import PipelineConfig
from genesig.pipeline.sagemaker.registry import describe, packages, sync, update_approval
from genesig.pipeline.sagemaker.run_here import LocalPipelineRunner, ProcessRunner
from genesig.pipeline.signatures import GeneSignature, default_signatures
from genesig.pipeline.synthetic import SyntheticSpec, write_synthetic_cohort

from .packages import SERVING_IMAGE, new_bucket

ROLE = "arn:aws:iam::123456789012:role/genesig-sagemaker"


def signature_set() -> list[GeneSignature]:
    """The built-in metagenes, one set with too few genes, and noise sets over the same genes."""
    built_in = [s for s in default_signatures() if s.name != "ALL"]
    genes = [g for s in built_in for g in s.genes]
    noise = [GeneSignature(f"noise set {i} (GO:{i:07d})", tuple(genes[i : i + 4]), "test") for i in range(0, 16, 2)]
    return [*built_in, GeneSignature("tiny", ("LRIG1", "NOT_A_GENE", "ALSO_NOT"), "test"), *noise]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cohort")
    return write_synthetic_cohort(
        folder / "cohort.csv",
        default_signatures(),
        # 500 background genes: the competitive test reported beside the verdict draws random sets from all of them.
        SyntheticSpec(seed=4, planted={"metagene_19": 3.0}, background_genes=500),
    )


def run_set(aws: dict[str, Any], cohort: Path, tmp_path: Path, **parameters: str) -> tuple[PipelineConfig, Any]:
    sm, s3 = aws["sagemaker"], aws["s3"]
    config = PipelineConfig(
        role_arn=ROLE,
        bucket=new_bucket(aws),
        name=f"genesig-{uuid.uuid4().hex[:6]}",
        training_image_uri="genesig-mme-train:local",
        serving_image_uri=SERVING_IMAGE,
    )
    sigs = signature_set()
    executions.upsert_pipeline(sm, s3, config, sigs)
    s3.put_object(Bucket=config.bucket, Key="genesig/data/cohort.csv", Body=cohort.read_bytes())
    arn = executions.start_set(sm, config.set_name, {"ShardCount": "3", **parameters})
    record = LocalPipelineRunner(sm, s3, ProcessRunner(), tmp_path / "runs").run(arn)
    return config, record


def test_one_execution_trains_gates_and_registers_the_whole_set(
    aws: dict[str, Any], cohort: Path, tmp_path: Path
) -> None:
    config, record = run_set(aws, cohort, tmp_path)
    assert record.status == "Succeeded", [(s.name, s.failure_reason) for s in record.steps]
    assert [s.name for s in record.steps] == ["PrepareSignatureSet", "TrainSignatures", "RegisterSignatures"]
    assert record.jobs_created == {"processing": 2, "training": 1} and record.instances == 5, "3 training instances"
    execution_id = record.arn.rsplit("/", 1)[1]
    report = json.loads(read_object(aws["s3"], s3_join(config.base_uri, "runs", execution_id, "report", "report.json")))
    rows = {r["signature"]: r for r in report["signatures"]}
    assert len(rows) == len(signature_set()), "every signature is in the report"
    assert rows["tiny"]["outcome"] == "skipped" and "only 1 of 3 genes" in rows["tiny"]["reason"]
    assert rows["metagene_19"]["outcome"] == "passed" and rows["metagene_19"]["version"] == 1
    assert {r["outcome"] for r in rows.values()} <= {"passed", "below threshold", "not significant", "skipped"}
    run = report["run"]
    assert "permuted" in run["self_contained_null"] and "random gene sets" in run["competitive_null"]
    passed = [r for r in rows.values() if r["outcome"] == "passed"]
    for row in passed:
        assert row["registered"] == "registered" and row["approval_status"] == "PendingManualApproval"
        assert packages(aws["sagemaker"], row["group"]), row["group"]
        assert row["group"] == names_for(row["signature"]).group
        # The package carries the run's verdict and both tests with the null each used, as the report gives them.
        package = aws["sagemaker"].describe_model_package(ModelPackageName=row["package_arn"])
        uri = package["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"]
        registered = json.loads(read_object(aws["s3"], uri))
        assert registered["gate"]["final"] is True and registered["gate"]["reason"] == row["reason"]
        significance = registered["significance"]
        assert significance["observed"] == row["cv_pooled"] and significance["coverage"] == row["coverage"]
        contained, versus = significance["self_contained"], significance["competitive"]
        assert (contained["p_value"], contained["q_value"]) == (row["p_value"], row["q_value"]) and row["q_value"]
        assert contained["null"] == report["run"]["self_contained_null"] and contained["permutations"] > 200
        assert (versus["status"], versus["p_value"], versus["q_value"]) == ("tested", row["competitive_p"],
                                                                             row["competitive_q"])  # fmt: skip
        # The run's random sets: RandomSets (200) over the set's two sizes (3 and 4 genes), 100 at each.
        assert versus["random_sets"] == 200 and versus["null"] == report["run"]["competitive_null"]
        assert significance["verdict"] == {"passed": True, "outcome": "passed", "reason": row["reason"]}
    assert report["run"]["counts"]["passed"] == len(passed)


def test_the_gates_settings_are_parameters_of_the_set_run(aws: dict[str, Any], cohort: Path, tmp_path: Path) -> None:
    config, record = run_set(aws, cohort, tmp_path, Permutations="60", Fdr="0.25", RandomSets="40")
    assert record.status == "Succeeded", [(s.name, s.failure_reason) for s in record.steps]
    execution_id = record.arn.rsplit("/", 1)[1]
    report = json.loads(read_object(aws["s3"], s3_join(config.base_uri, "runs", execution_id, "report", "report.json")))
    evaluated = [r for r in report["signatures"] if r["outcome"] in ("passed", "below threshold", "not significant")]
    assert evaluated and all(r["p_value"] is not None and r["q_value"] is not None for r in evaluated)
    each = -(-60 // len(evaluated))  # 60 over the run's signatures, rounded up: the instances computed them
    assert {r["permutations"] for r in evaluated} == {each * len(evaluated)}
    assert report["run"]["permutations"] == 60 and report["run"]["random_sets"] == 40
    assert all(r["l2"] is not None for r in evaluated), "the penalty each shipped model was fitted with"
    planted = next(r for r in evaluated if r["signature"] == "metagene_19")
    assert planted["outcome"] == "passed" and "FDR 0.25" in planted["reason"], planted
    # Each instance computed its signatures' permutations and drew only its shard's competitive sizes;
    # RegisterSignatures pooled them all, so every p is the one run-local gives on the same data and settings,
    # whatever the shards.
    from genesig.pipeline.run import RunOptions, run_local
    from genesig.pipeline.settings import GateSettings

    sets = tmp_path / "sets.json"
    sets.write_text(json.dumps({s.name: list(s.genes) for s in signature_set()}))
    local = run_local(
        RunOptions(
            data=cohort,
            workdir=tmp_path / "local",
            signatures_file=sets,
            gate=GateSettings(permutations=60, random_sets=40, fdr=0.25),
        )
    )
    fields = ("p_value", "q_value", "competitive_p", "competitive_q")
    here = {r.signature: [getattr(r, f) for f in fields] for r in local.results if r.evaluated}
    there = {r["signature"]: [r[f] for f in fields] for r in evaluated}
    assert there.keys() == here.keys()
    for name, values in there.items():
        assert values == pytest.approx(here[name], rel=1e-9), name


def test_a_rerun_registers_nothing_new_and_approved_runs_deploy(
    aws: dict[str, Any], cohort: Path, tmp_path: Path
) -> None:
    config, first = run_set(aws, cohort, tmp_path / "first")
    assert first.status == "Succeeded"
    sm, s3 = aws["sagemaker"], aws["s3"]
    arn = executions.start_set(sm, config.set_name, {"ShardCount": "2", "ModelApprovalStatus": "Approved"})
    second = LocalPipelineRunner(sm, s3, ProcessRunner(), tmp_path / "second").run(arn)
    assert second.status == "Succeeded"
    report = json.loads(
        read_object(s3, s3_join(config.base_uri, "runs", arn.rsplit("/", 1)[1], "report", "report.json"))
    )
    passed = [r for r in report["signatures"] if r["outcome"] == "passed"]
    assert passed and all(r["registered"] == "unchanged" for r in passed), "same genes, data and settings"
    assert all(r["version"] == 1 for r in passed)
    # Unchanged packages keep their status (PendingManualApproval): nothing was deployed; sync after approval does.
    assert all(r["deployed"] == "" for r in passed)
    update_approval(sm, describe(sm, passed[0]["package_arn"]), "Approved", "reviewed")
    deployed = [d for d in sync(sm, s3, config.mme_prefix) if d.group == passed[0]["group"]]
    assert [d.action for d in deployed] == ["deployed"]


def genesig(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "genesig.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**env, "COLUMNS": "250"},
    )


def test_the_commands_run_a_set_approve_by_rule_and_sync(aws: dict[str, Any], cohort: Path, tmp_path: Path) -> None:
    """upsert → run-here (a set execution, jobs in this environment) → approve --from-report --where → sync."""
    bucket, name = new_bucket(aws), f"genesig-{uuid.uuid4().hex[:6]}"
    aws["s3"].put_object(Bucket=bucket, Key="genesig/data/cohort.csv", Body=cohort.read_bytes())
    env = aws["env"]
    images = ["--training-image-uri", "genesig-mme-train:local", "--serving-image-uri", SERVING_IMAGE]
    upsert = genesig(env, "pipeline", "upsert", "--pipeline-name", name, "--role", ROLE, "--bucket", bucket, *images)
    assert upsert.returncode == 0, upsert.stderr[-2000:]
    run = genesig(
        env,
        "pipeline",
        "run-here",
        "--pipeline-name",
        name,
        "--no-docker",
        "--shards",
        "2",
        "--workdir",
        str(tmp_path / "runs"),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Succeeded" in run.stdout and "2 processing, 1 training; 4 instances in all" in run.stdout
    [execution] = [p for p in (tmp_path / "runs").iterdir()]
    report = f"s3://{bucket}/genesig/runs/{execution.name}/report/report.json"
    dry = genesig(
        env, "registry", "approve", "--aws", "--from-report", report, "--where", "cv_mean >= 0.6", "--dry-run"
    )
    assert dry.returncode == 0 and "would approve" in dry.stdout, dry.stderr[-2000:]
    approved = genesig(
        env,
        "registry",
        "approve",
        "--aws",
        "--from-report",
        report,
        "--where",
        "cv_mean >= 0.6",
        "--reason",
        "reviewed at the tumour board",
    )
    assert approved.returncode == 0 and "metagene_19" in approved.stdout, approved.stderr[-2000:]
    synced = genesig(env, "sync", "--prefix", f"s3://{bucket}/genesig/mme/")
    assert synced.returncode == 0, synced.stderr[-2000:]
    keys = [o["Key"] for o in aws["s3"].list_objects_v2(Bucket=bucket, Prefix="genesig/mme/")["Contents"]]
    assert "genesig/mme/metagene_19-v1.tar.gz" in keys
    bad_rule = genesig(env, "registry", "approve", "--aws", "--from-report", report, "--where", "auc > 0.5")
    assert bad_rule.returncode == 2 and "the report has no field 'auc'" in bad_rule.stderr
