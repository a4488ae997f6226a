"""Operating the one-signature pipeline on SageMaker: create or update it, start executions (one, or one per
signature with bounded concurrency) and follow them, saying for each how it ended and why.

A gate miss ends as "BelowThreshold" (the execution succeeded without registering a model), a failure names
its failed step and SageMaker's reason, a signature whose execution could not start is reported and the others
go on. Every function takes boto3 clients (see ``genesig.pipeline.sagemaker.aws.client``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from genesig.errors import DataError, GenesigError
from genesig.pipeline.sagemaker.aws import AwsNotFound, call, paginate, read_object, s3_join, split_s3, write_object
from genesig.pipeline.sagemaker.names import STAMP_FORMAT, names_for
from genesig.pipeline.sagemaker.pipeline import (
    CHECK,
    EVALUATE,
    PipelineConfig,
    definition_json,
    set_definition_json,
)
from genesig.pipeline.sagemaker.registry import ensure_group
from genesig.pipeline.signatures import GeneSignature

logger = logging.getLogger(__name__)

FINISHED = frozenset({"Succeeded", "BelowThreshold", "Failed", "Stopped", "NotStarted"})
SIGNATURE_SET_KEY = "signatures.json"


def upsert_pipeline(sm: Any, s3: Any, config: PipelineConfig, signatures: list[GeneSignature]) -> str:
    """Create or update both pipelines (the signature-set run and the one-signature retrain); publish the signature
    set beside them unless one is there already. Returns the signature-set pipeline's ARN."""
    set_uri = s3_join(config.signatures_uri, SIGNATURE_SET_KEY)
    bucket, key = split_s3(config.signatures_uri)
    listed = call(f"list {config.signatures_uri}", s3.list_objects_v2, Bucket=bucket, Prefix=key, MaxKeys=1)
    if not listed.get("Contents"):
        body = json.dumps({s.name: list(s.genes) for s in signatures}, indent=2).encode()
        write_object(s3, set_uri, body)
    _put_pipeline(sm, config, config.name, definition_json(config), "genesig-mme: retrain one signature's model")
    return _put_pipeline(
        sm,
        config,
        config.set_name,
        set_definition_json(config),
        "genesig-mme: train, gate and register a signature set",
    )


def _put_pipeline(sm: Any, config: PipelineConfig, name: str, definition: str, description: str) -> str:
    try:
        call(f"look up pipeline {name}", sm.describe_pipeline, PipelineName=name)
        exists = True
    except AwsNotFound:
        exists = False
    if exists:
        response = call(
            f"update pipeline {name}",
            sm.update_pipeline,
            PipelineName=name,
            PipelineDefinition=definition,
            RoleArn=config.role_arn,
        )
    else:
        response = call(
            f"create pipeline {name}",
            sm.create_pipeline,
            PipelineName=name,
            PipelineDefinition=definition,
            RoleArn=config.role_arn,
            PipelineDescription=description,
        )
    return str(response["PipelineArn"])


def start_set(sm: Any, pipeline: str, parameters: dict[str, str] | None = None) -> str:
    """One execution of the signature-set pipeline over the whole set."""
    response = call(
        f"start {pipeline}",
        sm.start_pipeline_execution,
        PipelineName=pipeline,
        PipelineExecutionDisplayName=f"set-{datetime.now(UTC).strftime(STAMP_FORMAT)}",
        PipelineParameters=[{"Name": k, "Value": str(v)} for k, v in (parameters or {}).items()],
    )
    return str(response["PipelineExecutionArn"])


def start_execution(sm: Any, pipeline: str, signature: str, parameters: dict[str, str] | None = None) -> str:
    """One execution for one signature (its group is created first, so a start with a bad role fails early)."""
    names = names_for(signature)
    ensure_group(sm, names)
    values = {"Signature": names.artifact, **(parameters or {})}
    response = call(
        f"start {pipeline} for {signature}",
        sm.start_pipeline_execution,
        PipelineName=pipeline,
        PipelineExecutionDisplayName=names.execution_display_name(datetime.now(UTC)),
        PipelineParameters=[{"Name": k, "Value": str(v)} for k, v in values.items()],
    )
    return str(response["PipelineExecutionArn"])


@dataclass
class ExecutionState:
    """One signature's execution: its status (SageMaker's, or BelowThreshold / NotStarted) and why."""

    signature: str
    arn: str | None
    status: str
    reason: str = ""
    failed_step: str = ""
    started: str = ""

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


def _steps(sm: Any, arn: str) -> list[dict[str, Any]]:
    return list(
        paginate(
            "list execution steps",
            sm,
            "list_pipeline_execution_steps",
            "PipelineExecutionSteps",
            PipelineExecutionArn=arn,
        )
    )


def _gate_reason(s3: Any, steps: list[dict[str, Any]], sm: Any) -> str:
    """The gate's own words, from the EvaluateModel job's evaluation.json."""
    evaluate = next((s for s in steps if s.get("StepName") == EVALUATE), None)
    job = (evaluate or {}).get("Metadata", {}).get("ProcessingJob", {}).get("Arn")
    if s3 is None or not job:
        return "the model did not pass the gate"
    try:
        described = call(
            "describe the evaluation job", sm.describe_processing_job, ProcessingJobName=job.rsplit("/", 1)[1]
        )
        outputs = described.get("ProcessingOutputConfig", {}).get("Outputs", [])
        uri = next(o["S3Output"]["S3Uri"] for o in outputs if o.get("OutputName") == "evaluation")
        return str(json.loads(read_object(s3, s3_join(uri, "evaluation.json")))["gate"]["reason"])
    except (GenesigError, StopIteration, KeyError, ValueError) as exc:
        return f"the model did not pass the gate (its evaluation.json could not be read: {exc})"


def settle(sm: Any, state: ExecutionState, s3: Any = None) -> ExecutionState:
    """Refresh ``state`` from SageMaker; a finished execution says how it ended (failed step, gate miss)."""
    if state.arn is None:
        return state
    described = call("describe execution", sm.describe_pipeline_execution, PipelineExecutionArn=state.arn)
    state.status = described["PipelineExecutionStatus"]
    state.started = str(described.get("CreationTime", state.started))
    if state.status not in ("Failed", "Succeeded"):
        return state
    try:
        steps = _steps(sm, state.arn)
    except GenesigError as exc:
        state.reason = f"its steps could not be read: {exc.message}"
        return state
    if state.status == "Failed":
        failed = next((s for s in steps if s.get("StepStatus") == "Failed"), None)
        state.failed_step = (failed or {}).get("StepName", "")
        state.reason = (failed or {}).get("FailureReason") or described.get("FailureReason", "")
    else:
        check = next((s for s in steps if s.get("StepName") == CHECK), None)
        if (check or {}).get("Metadata", {}).get("Condition", {}).get("Outcome") == "False":
            state.status, state.reason = "BelowThreshold", _gate_reason(s3, steps, sm)
    return state


def start_all(
    sm: Any,
    pipeline: str,
    signatures: list[str],
    *,
    max_parallel: int = 4,
    parameters: dict[str, str] | None = None,
    poll_s: float = 30.0,
    timeout_s: float | None = None,
    on_update: Callable[[list[ExecutionState]], None] | None = None,
    s3: Any = None,
) -> list[ExecutionState]:
    """One execution per signature, at most ``max_parallel`` running at once, until all have finished (or
    ``timeout_s`` has passed: those still running are returned as they are, never lost). One signature that
    cannot start is reported NotStarted with the reason; the others go on."""
    if max_parallel < 1:
        raise DataError("--max-parallel must be at least 1")
    states = [ExecutionState(s, None, "Pending") for s in signatures]
    pending = list(states)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        running = [s for s in states if s.arn is not None and not s.finished]
        while pending and len(running) < max_parallel:
            state = pending.pop(0)
            try:
                state.arn = start_execution(sm, pipeline, state.signature, parameters)
                state.status = "Executing"
                running.append(state)
            except GenesigError as exc:
                state.status, state.reason = "NotStarted", exc.message
                logger.warning("%s did not start: %s", state.signature, exc.message)
        for state in running:
            try:
                settle(sm, state, s3)
            except GenesigError as exc:  # a throttled describe: try again next round
                logger.warning("could not read the state of %s: %s", state.signature, exc.message)
        if on_update:
            on_update(states)
        if all(s.finished for s in states):
            return states
        if deadline is not None and time.monotonic() > deadline:
            return states
        time.sleep(poll_s)


def execution_status(sm: Any, pipeline: str, limit: int = 20, s3: Any = None) -> list[ExecutionState]:
    """The latest ``limit`` executions, newest first, each with how it ended and why."""
    summaries = []
    for summary in paginate(
        f"list executions of {pipeline}",
        sm,
        "list_pipeline_executions",
        "PipelineExecutionSummaries",
        PipelineName=pipeline,
        SortBy="CreationTime",
        SortOrder="Descending",
    ):
        summaries.append(summary)
        if len(summaries) >= limit:
            break
    states = []
    for summary in summaries:
        arn = summary["PipelineExecutionArn"]
        params = call(
            "read execution parameters", sm.list_pipeline_parameters_for_execution, PipelineExecutionArn=arn
        ).get("PipelineParameters", [])
        signature = next((p["Value"] for p in params if p["Name"] == "Signature"), "?")
        state = ExecutionState(
            signature, arn, summary["PipelineExecutionStatus"], started=str(summary.get("StartTime", ""))
        )
        states.append(settle(sm, state, s3) if state.status in ("Failed", "Succeeded") else state)
    return states
