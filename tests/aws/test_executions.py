"""The one-signature pipeline on SageMaker (moto behind the strict layer): upsert, start, start-all past failures
with bounded concurrency, and status that says how each execution ended and why.

moto records executions but runs nothing and has no ListPipelineExecutionSteps; the fakes below answer those
calls as SageMaker does (a failed step with its reason, a condition step's outcome)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from genesig.pipeline.sagemaker import executions
from genesig.pipeline.sagemaker.names import names_for
from genesig.pipeline.sagemaker.pipeline import PipelineConfig
from genesig.pipeline.signatures import default_signatures

from .packages import new_bucket

ROLE = "arn:aws:iam::123456789012:role/genesig-sagemaker"


def config(bucket: str) -> PipelineConfig:
    return PipelineConfig(role_arn=ROLE, bucket=bucket, name=f"genesig-{uuid.uuid4().hex[:8]}")


def test_upsert_creates_then_updates_and_publishes_the_signature_set(aws: dict[str, Any]) -> None:
    sm, s3 = aws["sagemaker"], aws["s3"]
    cfg = config(new_bucket(aws))
    arn = executions.upsert_pipeline(sm, s3, cfg, default_signatures())
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
    assert executions.upsert_pipeline(sm, s3, cfg, default_signatures()) == arn
    kept = s3.get_object(Bucket=cfg.bucket, Key="genesig/signatures/signatures.json")["Body"].read()
    assert kept == b'{"mine": ["A", "B"]}', "an operator's signature set is never overwritten"


def test_start_names_everything_as_aws_accepts(aws: dict[str, Any]) -> None:
    sm = aws["sagemaker"]
    cfg = config(new_bucket(aws))
    executions.upsert_pipeline(sm, aws["s3"], cfg, default_signatures())
    name = f"cell cycle {uuid.uuid4().hex[:4]} (GO:0007049)"
    arn = executions.start_execution(sm, cfg.name, name, {"MetricThreshold": "0.65"})
    params = {
        p["Name"]: p["Value"]
        for p in sm.list_pipeline_parameters_for_execution(PipelineExecutionArn=arn)["PipelineParameters"]
    }
    assert params == {"Signature": names_for(name).artifact, "MetricThreshold": "0.65"}
    sm.describe_model_package_group(ModelPackageGroupName=names_for(name).group)  # created before the start
    [state] = executions.execution_status(sm, cfg.name)
    assert state.signature == names_for(name).artifact


class FakeSageMaker:
    """moto plus what it lacks: executions that run for a few looks, then end as `endings` say."""

    def __init__(self, sm: Any, endings: dict[str, str], refuse_start: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.sm, self.endings, self.refuse_start = sm, endings, refuse_start
        self.looks: dict[str, int] = {}
        self.signature_of: dict[str, str] = {}
        self.running_high_water = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sm, name)

    def start_pipeline_execution(self, **kwargs: Any) -> Any:
        signature = next(p["Value"] for p in kwargs["PipelineParameters"] if p["Name"] == "Signature")
        if signature in self.refuse_start:
            from botocore.exceptions import ClientError

            raise ClientError(
                {"Error": {"Code": "ResourceLimitExceeded", "Message": "too many executions"}}, "StartPipelineExecution"
            )
        running = sum(1 for n in self.looks.values() if n < 3) + 1
        self.running_high_water = max(self.running_high_water, running)
        response = self.sm.start_pipeline_execution(**kwargs)
        self.looks[response["PipelineExecutionArn"]] = 0
        self.signature_of[response["PipelineExecutionArn"]] = signature
        return response

    def describe_pipeline_execution(self, PipelineExecutionArn: str) -> Any:  # noqa: N803
        self.looks[PipelineExecutionArn] += 1
        ending = self.endings.get(self.signature_of[PipelineExecutionArn], "Succeeded")
        status = "Executing" if self.looks[PipelineExecutionArn] < 3 else ending.split(":")[0]
        if status == "BelowThreshold":
            status = "Succeeded"
        return {"PipelineExecutionStatus": status}

    def get_paginator(self, operation: str) -> Any:
        if operation != "list_pipeline_execution_steps":
            return self.sm.get_paginator(operation)
        fake = self

        class Steps:
            def paginate(self, PipelineExecutionArn: str) -> Any:  # noqa: N803
                ending = fake.endings.get(fake.signature_of[PipelineExecutionArn], "Succeeded")
                if ending.startswith("Failed"):
                    step = {"StepName": "TrainModel", "StepStatus": "Failed", "FailureReason": ending.split(":", 1)[1]}
                    return [{"PipelineExecutionSteps": [step]}]
                outcome = "False" if ending == "BelowThreshold" else "True"
                check = {
                    "StepName": "CheckMetric",
                    "StepStatus": "Succeeded",
                    "Metadata": {"Condition": {"Outcome": outcome}},
                }
                return [{"PipelineExecutionSteps": [check]}]

        return Steps()


def test_start_all_goes_on_past_failures_bounds_concurrency_and_says_how_each_ended(aws: dict[str, Any]) -> None:
    cfg = config(new_bucket(aws))
    executions.upsert_pipeline(aws["sagemaker"], aws["s3"], cfg, default_signatures())
    names = [s.name for s in default_signatures()]
    sm = FakeSageMaker(
        aws["sagemaker"],
        {"metagene_19": "Failed:AlgorithmError: training diverged", "metagene_10": "BelowThreshold"},
        refuse_start={"metagene_3"},
    )
    updates: list[int] = []
    states = executions.start_all(
        sm, cfg.name, names, max_parallel=2, poll_s=0.0, on_update=lambda s: updates.append(len(s))
    )
    by_name = {s.signature: s for s in states}
    assert sorted(by_name) == sorted(names), "every signature is reported, in spite of the failures"
    assert (by_name["metagene_19"].status, by_name["metagene_19"].failed_step) == ("Failed", "TrainModel")
    assert by_name["metagene_19"].reason == "AlgorithmError: training diverged"
    assert by_name["metagene_10"].status == "BelowThreshold", "a gate miss is a result, not a failed execution"
    assert by_name["metagene_3"].status == "NotStarted" and "ResourceLimitExceeded" in by_name["metagene_3"].reason
    assert {s.status for n, s in by_name.items() if n not in ("metagene_19", "metagene_10", "metagene_3")} == {
        "Succeeded"
    }
    assert sm.running_high_water == 2 and updates


def test_a_timeout_leaves_running_executions_listed(aws: dict[str, Any]) -> None:
    cfg = config(new_bucket(aws))
    executions.upsert_pipeline(aws["sagemaker"], aws["s3"], cfg, default_signatures())
    sm = FakeSageMaker(aws["sagemaker"], {})
    states = executions.start_all(sm, cfg.name, ["metagene_19", "metagene_10"], max_parallel=4, poll_s=0.0, timeout_s=0)
    assert [s.status for s in states] == ["Executing", "Executing"] and all(s.arn for s in states)


def test_status_command_prints_a_table_without_a_traceback(aws: dict[str, Any], tmp_path: Path) -> None:
    cfg = config(new_bucket(aws))
    executions.upsert_pipeline(aws["sagemaker"], aws["s3"], cfg, default_signatures())
    executions.start_execution(aws["sagemaker"], cfg.name, "metagene_19")
    result = subprocess.run(
        [sys.executable, "-m", "genesig.cli", "pipeline", "status", "--pipeline-name", cfg.name],
        capture_output=True,
        text=True,
        timeout=120,
        env={**aws["env"], "COLUMNS": "250"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "metagene_19" in result.stdout and "Traceback" not in result.stderr
