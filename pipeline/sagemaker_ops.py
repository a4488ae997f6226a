"""Operating the pipeline and the endpoint on AWS: upsert/start/status, registry sync to the MME prefix,
endpoint create/update/delete, and predictions through ``TargetModel``.

Every function takes boto3 clients (see ``genesig.pipeline.aws.client``), so tests pass clients that
point at emulators; nothing here reads the environment itself.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from genesig.artifact import artifact_filename
from genesig.errors import DataError, GenesigError, ModelNotFound
from genesig.pipeline.aws import S3Deployment, call, deploy_model_package, group_name, split_s3
from genesig.pipeline.sagemaker_pipeline import PipelineConfig, definition_json
from genesig.pipeline.signatures import GeneSignature, artifact_name

FINISHED = {"Succeeded", "Failed", "Stopped"}


class TimedOut(GenesigError):
    status = 504
    code = "timeout"


def _already_exists(exc: GenesigError) -> bool:
    """SageMaker's create calls fail this way for an existing resource (ResourceInUse, or a ValidationException)."""
    return "already exists" in exc.message.lower() or "ResourceInUse" in exc.message


def upsert_pipeline(sm: Any, s3: Any, config: PipelineConfig, signatures: list[GeneSignature]) -> str:
    """Create or update the pipeline; publish the default signature set beside it if none is there yet."""
    bucket, key_prefix = split_s3(f"{config.base_uri}/signatures/signatures.json")
    listing = call(
        f"list s3://{bucket}/{key_prefix}", s3.list_objects_v2, Bucket=bucket, Prefix=key_prefix.rsplit("/", 1)[0] + "/"
    )
    if not listing.get("Contents"):
        body = json.dumps({s.name: list(s.genes) for s in signatures}, indent=2).encode()
        call(f"write s3://{bucket}/{key_prefix}", s3.put_object, Bucket=bucket, Key=key_prefix, Body=body)
    definition = definition_json(config)
    try:
        response = call(
            "create pipeline",
            sm.create_pipeline,
            PipelineName=config.name,
            PipelineDefinition=definition,
            RoleArn=config.role_arn,
            PipelineDescription="genesig-mme: one survival model per gene signature",
        )
    except GenesigError as exc:
        if not _already_exists(exc):
            raise
        response = call(
            "update pipeline",
            sm.update_pipeline,
            PipelineName=config.name,
            PipelineDefinition=definition,
            RoleArn=config.role_arn,
        )
    return str(response["PipelineArn"])


def ensure_group(sm: Any, group: str, signature: str) -> None:
    try:
        call(
            f"create model package group {group}",
            sm.create_model_package_group,
            ModelPackageGroupName=group,
            ModelPackageGroupDescription=f"genesig-mme models of signature {signature}"[:1024],
        )
    except GenesigError as exc:
        if not _already_exists(exc):
            raise


def start_execution(sm: Any, pipeline: str, signature: str, parameters: dict[str, str] | None = None) -> str:
    """One execution for one signature; its model package group is created first (RegisterModel needs it)."""
    name = artifact_name(signature)
    ensure_group(sm, group_name(name), signature)
    values = {"Signature": name, **(parameters or {})}
    response = call(
        f"start {pipeline} for {signature}",
        sm.start_pipeline_execution,
        PipelineName=pipeline,
        PipelineExecutionDisplayName=f"{name}-{datetime.now(UTC):%Y%m%d%H%M%S}"[:82],
        PipelineParameters=[{"Name": k, "Value": v} for k, v in values.items()],
    )
    return str(response["PipelineExecutionArn"])


@dataclass
class ExecutionResult:
    signature: str
    arn: str
    status: str


def start_all(
    sm: Any,
    pipeline: str,
    signatures: list[str],
    *,
    max_parallel: int = 4,
    parameters: dict[str, str] | None = None,
    poll_s: float = 30.0,
    timeout_s: float = 6 * 3600,
    on_update: Callable[[list[ExecutionResult]], None] | None = None,
) -> list[ExecutionResult]:
    """One execution per signature, at most ``max_parallel`` running at once; returns when all have finished."""
    if max_parallel < 1:
        raise DataError("--max-parallel must be at least 1")
    pending = list(signatures)
    running: list[ExecutionResult] = []
    done: list[ExecutionResult] = []
    deadline = time.monotonic() + timeout_s
    while pending or running:
        while pending and len(running) < max_parallel:
            signature = pending.pop(0)
            running.append(
                ExecutionResult(signature, start_execution(sm, pipeline, signature, parameters), "Executing")
            )
        for result in list(running):
            status = call("describe execution", sm.describe_pipeline_execution, PipelineExecutionArn=result.arn)[
                "PipelineExecutionStatus"
            ]
            result.status = status
            if status in FINISHED:
                running.remove(result)
                done.append(result)
        if on_update:
            on_update(done + running)
        if running:
            if time.monotonic() > deadline:
                raise TimedOut(f"{len(running)} executions still running after {timeout_s:.0f} s")
            time.sleep(poll_s)
    return done


def execution_status(sm: Any, pipeline: str, limit: int = 20) -> list[dict[str, Any]]:
    summaries = call(
        f"list executions of {pipeline}",
        sm.list_pipeline_executions,
        PipelineName=pipeline,
        SortBy="CreationTime",
        SortOrder="Descending",
        MaxResults=limit,
    )["PipelineExecutionSummaries"]
    rows = []
    for summary in summaries:
        params = call(
            "read execution parameters",
            sm.list_pipeline_parameters_for_execution,
            PipelineExecutionArn=summary["PipelineExecutionArn"],
        ).get("PipelineParameters", [])
        rows.append(
            {
                "signature": next((p["Value"] for p in params if p["Name"] == "Signature"), "?"),
                "status": summary["PipelineExecutionStatus"],
                "started": str(summary.get("StartTime", "")),
                "arn": summary["PipelineExecutionArn"],
            }
        )
    return rows


def latest_approved(sm: Any, group: str) -> dict[str, Any] | None:
    packages = call(
        f"list approved packages of {group}",
        sm.list_model_packages,
        ModelPackageGroupName=group,
        ModelApprovalStatus="Approved",
        SortBy="CreationTime",
        SortOrder="Descending",
        MaxResults=1,
    ).get("ModelPackageSummaryList", [])
    return packages[0] if packages else None


def genesig_groups(sm: Any) -> list[str]:
    groups, token = [], None
    while True:
        kwargs: dict[str, Any] = {"NameContains": "genesig-", "MaxResults": 100}
        if token:
            kwargs["NextToken"] = token
        page = call("list model package groups", sm.list_model_package_groups, **kwargs)
        groups += [
            g["ModelPackageGroupName"]
            for g in page.get("ModelPackageGroupSummaryList", [])
            if g["ModelPackageGroupName"].startswith("genesig-")
        ]
        token = page.get("NextToken")
        if not token:
            return sorted(groups)


def list_packages(sm: Any, group: str | None = None) -> list[dict[str, Any]]:
    """Model packages of one genesig group or of all of them, oldest first."""
    rows = []
    for name in [group] if group else genesig_groups(sm):
        page = call(
            f"list packages of {name}",
            sm.list_model_packages,
            ModelPackageGroupName=name,
            MaxResults=100,
            SortBy="CreationTime",
            SortOrder="Ascending",
        )
        rows += page.get("ModelPackageSummaryList", [])
    return rows


def package_arn(sm: Any, group: str, version: int) -> str:
    for package in list_packages(sm, group):
        if package.get("ModelPackageVersion") == version:
            return str(package["ModelPackageArn"])
    raise ModelNotFound(f"model package group {group} has no version {version}")


def set_approval(sm: Any, group: str, version: int, status: str, reason: str = "") -> dict[str, Any]:
    """Approve or reject one version (SageMaker records the change; our deploy step copies only Approved)."""
    arn = package_arn(sm, group, version)
    kwargs: dict[str, Any] = {"ModelPackageArn": arn, "ModelApprovalStatus": status}
    if reason:
        kwargs["ApprovalDescription"] = reason[:1024]
    call(f"set {group} v{version} to {status}", sm.update_model_package, **kwargs)
    return dict(call(f"describe {arn}", sm.describe_model_package, ModelPackageName=arn))


def sync_prefix(sm: Any, s3: Any, prefix: str) -> list[S3Deployment]:
    """Copy the latest Approved package of every genesig group into the MME prefix (idempotent)."""
    deployments = []
    for group in genesig_groups(sm):
        package = latest_approved(sm, group)
        if package is not None:
            deployments.append(deploy_model_package(sm, s3, package["ModelPackageArn"], prefix))
    return deployments


def resolve_target_model(sm: Any, signature: str, version: int | None = None) -> str:
    """The TargetModel for a signature: its latest Approved version, or an explicit one."""
    name = artifact_name(signature)
    if version is None:
        package = latest_approved(sm, group_name(name))
        if package is None:
            raise ModelNotFound(f"signature {signature!r} has no Approved model package in {group_name(name)}")
        version = int(package["ModelPackageVersion"])
    return artifact_filename(name, version)


def predict(
    runtime: Any,
    endpoint: str,
    target_model: str,
    body: bytes,
    content_type: str = "text/csv",
    accept: str = "application/json",
) -> bytes:
    response = call(
        f"invoke {endpoint} ({target_model})",
        runtime.invoke_endpoint,
        EndpointName=endpoint,
        TargetModel=target_model,
        ContentType=content_type,
        Accept=accept,
        Body=body,
    )
    return bytes(response["Body"].read())


def deploy_endpoint(
    sm: Any,
    name: str,
    *,
    image_uri: str,
    prefix: str,
    role_arn: str,
    instance_type: str = "ml.m5.large",
    instance_count: int = 1,
    timeout_s: float = 1800,
    poll_s: float = 30.0,
) -> str:
    """Create the endpoint, or point it at a new model + config; wait (bounded) until InService."""
    split_s3(prefix)
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    model = f"{name}-{stamp}"[:63]
    call(
        "create model",
        sm.create_model,
        ModelName=model,
        ExecutionRoleArn=role_arn,
        PrimaryContainer={"Image": image_uri, "Mode": "MultiModel", "ModelDataUrl": prefix.rstrip("/") + "/"},
    )
    call(
        "create endpoint config",
        sm.create_endpoint_config,
        EndpointConfigName=model,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": model,
                "InitialInstanceCount": instance_count,
                "InstanceType": instance_type,
            }
        ],
    )
    try:
        call(f"describe endpoint {name}", sm.describe_endpoint, EndpointName=name)
        exists = True
    except GenesigError:
        exists = False
    if exists:
        call(f"update endpoint {name}", sm.update_endpoint, EndpointName=name, EndpointConfigName=model)
    else:
        call(f"create endpoint {name}", sm.create_endpoint, EndpointName=name, EndpointConfigName=model)
    return wait_in_service(sm, name, timeout_s=timeout_s, poll_s=poll_s)


def wait_in_service(sm: Any, name: str, *, timeout_s: float, poll_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        described = call(f"describe endpoint {name}", sm.describe_endpoint, EndpointName=name)
        status = described["EndpointStatus"]
        if status == "InService":
            return status
        if status == "Failed":
            raise GenesigError(f"endpoint {name} failed: {described.get('FailureReason', 'no reason given')}")
        if time.monotonic() > deadline:
            raise TimedOut(f"endpoint {name} is still {status} after {timeout_s:.0f} s")
        time.sleep(poll_s)


def delete_endpoint(sm: Any, name: str) -> None:
    config = call(f"describe endpoint {name}", sm.describe_endpoint, EndpointName=name)["EndpointConfigName"]
    call(f"delete endpoint {name}", sm.delete_endpoint, EndpointName=name)
    call(f"delete endpoint config {config}", sm.delete_endpoint_config, EndpointConfigName=config)
