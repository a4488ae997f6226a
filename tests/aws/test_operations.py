"""Pipeline upsert/start/status, registry sync, endpoint and predict against moto (SageMaker) and rclone (S3)."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from genesig.errors import GenesigError, ModelNotFound
from genesig.pipeline import sagemaker_ops as ops
from genesig.pipeline.aws import call
from genesig.pipeline.sagemaker_pipeline import PipelineConfig
from genesig.pipeline.signatures import default_signatures

from .test_deploy_sagemaker import bucket


def config(bucket_name: str, name: str | None = None) -> PipelineConfig:
    return PipelineConfig(bucket=bucket_name, name=name or f"genesig-{uuid.uuid4().hex[:8]}")


def test_upsert_creates_then_updates_and_publishes_the_signature_set(aws: dict[str, Any]) -> None:
    sm, s3 = aws["sagemaker"], aws["s3"]
    cfg = config(bucket(aws))
    arn = ops.upsert_pipeline(sm, s3, cfg, default_signatures())
    definition = json.loads(sm.describe_pipeline(PipelineName=cfg.name)["PipelineDefinition"])
    assert [s["Name"] for s in definition["Steps"]] == [
        "PreprocessCohort",
        "TrainModel",
        "EvaluateModel",
        "CheckMetric",
    ]
    published = json.loads(s3.get_object(Bucket=cfg.bucket, Key="genesig/signatures/signatures.json")["Body"].read())
    assert published["metagene_19"] == ["LRIG1", "HPGD", "GDF15"]
    s3.put_object(Bucket=cfg.bucket, Key="genesig/signatures/signatures.json", Body=b'{"mine": ["A", "B"]}')
    assert ops.upsert_pipeline(sm, s3, cfg, default_signatures()) == arn
    kept = s3.get_object(Bucket=cfg.bucket, Key="genesig/signatures/signatures.json")["Body"].read()
    assert kept == b'{"mine": ["A", "B"]}', "an operator's signature set is never overwritten"


def test_start_creates_the_group_and_passes_the_sanitised_signature(aws: dict[str, Any]) -> None:
    sm, s3 = aws["sagemaker"], aws["s3"]
    cfg = config(bucket(aws))
    ops.upsert_pipeline(sm, s3, cfg, default_signatures())
    arn = ops.start_execution(sm, cfg.name, "cell cycle (GO:0007049)", {"MetricThreshold": "0.65"})
    params = {
        p["Name"]: p["Value"]
        for p in sm.list_pipeline_parameters_for_execution(PipelineExecutionArn=arn)["PipelineParameters"]
    }
    assert params == {"Signature": "cell_cycle_GO_0007049-f9408182", "MetricThreshold": "0.65"}
    groups = [g["ModelPackageGroupName"] for g in sm.list_model_package_groups()["ModelPackageGroupSummaryList"]]
    assert "genesig-cell_cycle_GO_0007049-f9408182" in groups
    rows = ops.execution_status(sm, cfg.name)
    assert rows[0]["signature"] == "cell_cycle_GO_0007049-f9408182" and rows[0]["status"] == "Succeeded"


class SlowExecutions:
    """Wraps the emulator so executions report Executing for a few polls, to observe the concurrency bound."""

    def __init__(self, sm: Any) -> None:
        self.sm = sm
        self.polls: dict[str, int] = {}
        self.running_high_water = 0
        self.started = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sm, name)

    def start_pipeline_execution(self, **kwargs: Any) -> Any:
        self.started += 1
        running = sum(1 for n in self.polls.values() if n < 3) + 1
        self.running_high_water = max(self.running_high_water, running)
        response = self.sm.start_pipeline_execution(**kwargs)
        self.polls[response["PipelineExecutionArn"]] = 0
        return response

    def describe_pipeline_execution(self, PipelineExecutionArn: str) -> Any:  # noqa: N803
        self.polls[PipelineExecutionArn] += 1
        status = "Executing" if self.polls[PipelineExecutionArn] < 3 else "Succeeded"
        return {"PipelineExecutionStatus": status}


def test_start_all_runs_one_execution_per_signature_with_bounded_concurrency(aws: dict[str, Any]) -> None:
    sm = SlowExecutions(aws["sagemaker"])
    cfg = config(bucket(aws))
    ops.upsert_pipeline(aws["sagemaker"], aws["s3"], cfg, default_signatures())
    names = [s.name for s in default_signatures()]
    updates: list[int] = []
    results = ops.start_all(sm, cfg.name, names, max_parallel=2, poll_s=0.0, on_update=lambda r: updates.append(len(r)))
    assert sorted(r.signature for r in results) == sorted(names)
    assert all(r.status == "Succeeded" for r in results) and sm.started == len(names)
    assert sm.running_high_water == 2 and updates


def upload_package(aws: dict[str, Any], archive: Path, bucket_name: str, group: str, status: str) -> str:
    key = f"models/{uuid.uuid4().hex[:8]}/model.tar.gz"
    aws["s3"].put_object(Bucket=bucket_name, Key=key, Body=archive.read_bytes())
    return aws["sagemaker"].create_model_package(
        ModelPackageGroupName=group,
        ModelApprovalStatus=status,
        InferenceSpecification={
            "Containers": [{"Image": "img", "ModelDataUrl": f"s3://{bucket_name}/{key}"}],
            "SupportedContentTypes": ["text/csv"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
    )["ModelPackageArn"]


def test_registry_round_trip_and_idempotent_sync(aws: dict[str, Any], make_archive: Callable[..., Path]) -> None:
    sm = aws["sagemaker"]
    name = bucket(aws)
    signature = f"sig{uuid.uuid4().hex[:6]}"
    group = f"genesig-{signature}"
    ops.ensure_group(sm, group, signature)
    ops.ensure_group(sm, group, signature)  # idempotent
    upload_package(aws, make_archive(signature, version=1), name, group, "Approved")
    second = upload_package(aws, make_archive(signature, version=2, seed=2), name, group, "PendingManualApproval")
    sm.update_model_package(ModelPackageArn=second, ModelApprovalStatus="Approved")
    assert ops.resolve_target_model(sm, signature) == f"{signature}-v2.tar.gz"
    assert ops.resolve_target_model(sm, signature, version=1) == f"{signature}-v1.tar.gz"
    prefix = f"s3://{name}/mme/"
    first = [d for d in ops.sync_prefix(sm, aws["s3"], prefix) if signature in d.key]
    assert [(d.key, d.action) for d in first] == [(f"mme/{signature}-v2.tar.gz", "copied")]
    again = [d for d in ops.sync_prefix(sm, aws["s3"], prefix) if signature in d.key]
    assert [d.action for d in again] == ["already deployed"]


def test_no_approved_package_and_missing_bucket_are_clear(aws: dict[str, Any]) -> None:
    with pytest.raises(ModelNotFound, match="signature 'never_trained' has no Approved model package"):
        ops.resolve_target_model(aws["sagemaker"], "never_trained")
    with pytest.raises(GenesigError, match="no-such-bucket"):
        ops.upsert_pipeline(aws["sagemaker"], aws["s3"], config("no-such-bucket"), default_signatures())


def test_throttling_gives_a_clear_error_after_botocore_retries() -> None:
    def throttled(**_kwargs: Any) -> None:
        raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, "ListModelPackages")

    with pytest.raises(GenesigError, match="list packages failed: ThrottlingException Rate exceeded"):
        call("list packages", throttled)


class UpdatableEndpoints:
    """moto's server does not implement UpdateEndpoint; this adds it (the endpoint takes the new config)."""

    def __init__(self, sm: Any) -> None:
        self.sm = sm
        self.configs: dict[str, str] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sm, name)

    def update_endpoint(self, EndpointName: str, EndpointConfigName: str) -> Any:  # noqa: N803
        self.sm.describe_endpoint_config(EndpointConfigName=EndpointConfigName)  # must exist
        self.configs[EndpointName] = EndpointConfigName
        return {}

    def describe_endpoint(self, EndpointName: str) -> Any:  # noqa: N803
        described = self.sm.describe_endpoint(EndpointName=EndpointName)
        described["EndpointConfigName"] = self.configs.get(EndpointName, described["EndpointConfigName"])
        return described


def test_endpoint_create_update_delete(aws: dict[str, Any]) -> None:
    sm = UpdatableEndpoints(aws["sagemaker"])
    name = f"genesig-{uuid.uuid4().hex[:6]}"
    role = "arn:aws:iam::123456789012:role/genesig"
    assert (
        ops.deploy_endpoint(sm, name, image_uri="img:1", prefix="s3://b/mme/", role_arn=role, poll_s=0.0) == "InService"
    )
    model = sm.describe_endpoint_config(
        EndpointConfigName=sm.describe_endpoint(EndpointName=name)["EndpointConfigName"]
    )
    container = sm.describe_model(ModelName=model["ProductionVariants"][0]["ModelName"])["PrimaryContainer"]
    assert container["Mode"] == "MultiModel" and container["ModelDataUrl"] == "s3://b/mme/"
    ops.deploy_endpoint(sm, name, image_uri="img:2", prefix="s3://b/mme/", role_arn=role, poll_s=0.0)
    updated = sm.describe_endpoint_config(
        EndpointConfigName=sm.describe_endpoint(EndpointName=name)["EndpointConfigName"]
    )
    assert (
        sm.describe_model(ModelName=updated["ProductionVariants"][0]["ModelName"])["PrimaryContainer"]["Image"]
        == "img:2"
    )
    ops.delete_endpoint(aws["sagemaker"], name)
    with pytest.raises(GenesigError):
        call("describe", aws["sagemaker"].describe_endpoint, EndpointName=name)


class RuntimeRecorder(http.server.BaseHTTPRequestHandler):
    """Stands in for SageMaker Runtime's InvokeEndpoint REST call and records what botocore sent."""

    seen: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        RuntimeRecorder.seen.append(
            {
                "path": self.path,
                "target": self.headers.get("X-Amzn-SageMaker-Target-Model"),
                "content_type": self.headers.get("Content-Type"),
                "body": body,
            }
        )
        answer = json.dumps(
            {
                "model": "m",
                "version": 2,
                "output": "probability",
                "predictions": [{"probability": 0.25, "risk_group": "low"}],
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def runtime_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RuntimeRecorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_predict_command_sends_the_resolved_target_model(
    aws: dict[str, Any], make_archive: Callable[..., Path], runtime_url: str, tmp_path: Path
) -> None:
    name = bucket(aws)
    signature = f"sig{uuid.uuid4().hex[:6]}"
    ops.ensure_group(aws["sagemaker"], f"genesig-{signature}", signature)
    upload_package(aws, make_archive(signature, version=1), name, f"genesig-{signature}", "Approved")
    patients = tmp_path / "patients.csv"
    patients.write_text("LRIG1,HPGD,GDF15\n1,2,3\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "genesig.cli",
            "predict",
            "--signature",
            signature,
            "--input",
            str(patients),
            "--endpoint",
            "genesig-mme",
            "--runtime-endpoint-url",
            runtime_url,
            "--out",
            str(tmp_path / "out.json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=aws["env"],
    )
    assert result.returncode == 0, result.stderr[-2000:]
    [request] = [r for r in RuntimeRecorder.seen if r["body"] == patients.read_bytes()]
    assert request["path"] == "/endpoints/genesig-mme/invocations"
    assert request["target"] == f"{signature}-v1.tar.gz" and request["content_type"] == "text/csv"
    assert json.loads((tmp_path / "out.json").read_text())["predictions"][0]["risk_group"] == "low"


def test_registry_commands_against_sagemaker(aws: dict[str, Any], make_archive: Callable[..., Path]) -> None:
    name = bucket(aws)
    signature = f"sig{uuid.uuid4().hex[:6]}"
    ops.ensure_group(aws["sagemaker"], f"genesig-{signature}", signature)
    upload_package(aws, make_archive(signature, version=1), name, f"genesig-{signature}", "PendingManualApproval")

    def genesig(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "genesig.cli", "registry", *args, "--aws"],
            capture_output=True,
            text=True,
            timeout=120,
            env={**aws["env"], "COLUMNS": "200"},
        )

    listed = genesig("list", "--group", signature)
    assert listed.returncode == 0 and "PendingManualApproval" in listed.stdout
    approved = genesig("approve", signature, "1", "--reason", "reviewed by the tumour board")
    assert approved.returncode == 0, approved.stderr
    assert ops.resolve_target_model(aws["sagemaker"], signature) == f"{signature}-v1.tar.gz"
    missing = genesig("approve", signature, "7")
    assert missing.returncode == 2 and f"genesig-{signature} has no version 7" in missing.stderr
