"""Run a SageMaker Pipeline execution on this machine the way SageMaker runs it, against the SageMaker and S3 APIs at
their endpoint URLs (emulators, or AWS itself).

Each step's job is first created through the SageMaker API with the arguments SageMaker would send
(CreateProcessingJob, CreateTrainingJob: an emulator behind a strict layer sees and checks every request), then
run here in SageMaker's folder layout: processing inputs downloaded under ``/opt/ml/processing/...`` and outputs
uploaded from there; training channels under ``/opt/ml/input/data/<channel>`` (``ShardedByS3Key``: each instance
its share of the objects), ``hyperparameters.json`` and ``resourceconfig.json`` per instance, ``/opt/ml/model``
packed into ``model.tar.gz``. Jobs run in their image with Docker (the real container entry points), or in this
Python environment with ``/opt/ml`` mapped to a folder. Conditions, property files (``JsonGet``), ``Join`` and
step properties are resolved as the pipeline service resolves them.

It proves and rehearses the SageMaker path without an AWS account (``genesig pipeline run-here``, the
signature-set benchmark, the README walkthrough's test); on AWS, SageMaker Pipelines does all of this.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from genesig.errors import GenesigError
from genesig.pipeline.sagemaker.aws import call, paginate, s3_join, split_s3, write_object
from genesig.pipeline.sagemaker.names import entity_name

logger = logging.getLogger(__name__)

OPT_ML = "/opt/ml"
TRANSFER_WORKERS = 16
# Passed to every job so that it reaches the same AWS endpoints and credentials as this process.
AWS_ENVIRONMENT = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_SAGEMAKER",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME",
)


class JobRunner(Protocol):
    """Runs one job's container command with ``root`` as its ``/opt/ml``; returns the exit code and the log."""

    def run(self, image: str, command: list[str], root: Path, env: dict[str, str]) -> tuple[int, str]: ...


class DockerRunner:
    """The job's image with Docker, ``root`` mounted at ``/opt/ml``, on the host's network (to reach emulators)."""

    def run(self, image: str, command: list[str], root: Path, env: dict[str, str]) -> tuple[int, str]:
        entry, *args = command
        docker = ["docker", "run", "--rm", "--network", "host", "--volume", f"{root}:{OPT_ML}", "--entrypoint", entry]
        for key, value in sorted(env.items()):
            docker += ["--env", f"{key}={value}"]
        result = subprocess.run([*docker, image, *args], capture_output=True, text=True)
        return result.returncode, result.stdout + result.stderr


class ProcessRunner:
    """The job's command in this Python environment: ``genesig`` is this interpreter's, ``/opt/ml`` becomes
    ``root`` in every argument (``genesig train`` gets ``--root``)."""

    def run(self, image: str, command: list[str], root: Path, env: dict[str, str]) -> tuple[int, str]:
        entry, *args = command
        if entry != "genesig":
            raise GenesigError(f"without Docker only genesig's own entry points run here, not {entry!r}")
        args = [a.replace(OPT_ML, str(root), 1) if a.startswith(OPT_ML) else a for a in args]
        if args == ["train"]:
            args += ["--root", str(root)]
        result = subprocess.run(
            [sys.executable, "-m", "genesig.cli", *args],
            capture_output=True,
            text=True,
            env={**os.environ, **env, "MPLCONFIGDIR": str(root / "tmp" / "matplotlib")},
        )
        return result.returncode, result.stdout + result.stderr


@dataclass
class StepRecord:
    name: str
    kind: str
    status: str = "Executing"
    job: str = ""
    failure_reason: str = ""
    seconds: float = 0.0
    outcome: str = ""


@dataclass
class ExecutionRecord:
    arn: str
    pipeline: str
    status: str = "Executing"
    steps: list[StepRecord] = field(default_factory=list)
    jobs_created: dict[str, int] = field(default_factory=lambda: {"processing": 0, "training": 0})
    instances: int = 0
    seconds: float = 0.0


class StepFailed(GenesigError):
    pass


class LocalPipelineRunner:
    """Runs the executions of pipelines stored in SageMaker (or an emulator) here."""

    def __init__(
        self, sm: Any, s3: Any, runner: JobRunner, workdir: Path, *, on_step: Callable[[StepRecord], None] | None = None
    ) -> None:
        self.sm, self.s3, self.runner, self.workdir, self.on_step = sm, s3, runner, workdir, on_step
        self.env = {k: os.environ[k] for k in AWS_ENVIRONMENT if k in os.environ}

    # --- the execution -------------------------------------------------------------------------------------
    def run(self, execution_arn: str) -> ExecutionRecord:
        pipeline = execution_arn.split(":pipeline/", 1)[1].split("/execution/", 1)[0]
        definition = json.loads(
            call(f"describe pipeline {pipeline}", self.sm.describe_pipeline, PipelineName=pipeline)[
                "PipelineDefinition"
            ]
        )
        given = {
            p["Name"]: p["Value"]
            for p in call(
                "read execution parameters",
                self.sm.list_pipeline_parameters_for_execution,
                PipelineExecutionArn=execution_arn,
            ).get("PipelineParameters", [])
        }
        parameters = {
            p["Name"]: _typed(p, given.get(p["Name"], p.get("DefaultValue"))) for p in definition["Parameters"]
        }
        record = ExecutionRecord(execution_arn, pipeline)
        context = _Context(parameters, execution_arn.rsplit("/", 1)[1])
        folder = self.workdir / context.execution_id
        started = time.perf_counter()
        try:
            self._steps(definition["Steps"], context, record, folder)
            record.status = "Succeeded"
        except StepFailed as exc:
            record.status = "Failed"
            logger.error("execution %s failed: %s", context.execution_id, exc.message)
        record.seconds = time.perf_counter() - started
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "execution.json").write_text(json.dumps(_jsonable(record), indent=2) + "\n")
        return record

    def _steps(self, steps: list[dict[str, Any]], context: _Context, record: ExecutionRecord, folder: Path) -> None:
        for step in steps:
            entry = StepRecord(step["Name"], step["Type"])
            record.steps.append(entry)
            started = time.perf_counter()
            try:
                if step["Type"] == "Processing":
                    self._processing(step, context, entry, folder, record)
                elif step["Type"] == "Training":
                    self._training(step, context, entry, folder, record)
                elif step["Type"] == "Condition":
                    outcome = all(context.condition(c) for c in step["Arguments"]["Conditions"])
                    entry.outcome = str(outcome)
                    branch = step["Arguments"]["IfSteps" if outcome else "ElseSteps"]
                    entry.status = "Succeeded"
                    self._steps(branch, context, record, folder)
                    continue
                elif step["Type"] == "Fail":
                    raise StepFailed(str(context.resolve(step["Arguments"].get("ErrorMessage", "failed"))))
                else:
                    raise StepFailed(f"step type {step['Type']} is not run here")
                entry.status = "Succeeded"
            except StepFailed as exc:
                entry.status, entry.failure_reason = "Failed", exc.message
                raise
            finally:
                entry.seconds = time.perf_counter() - started
                if self.on_step and entry.status != "Executing":
                    self.on_step(entry)

    # --- processing ------------------------------------------------------------------------------------------
    def _processing(
        self, step: dict[str, Any], context: _Context, entry: StepRecord, folder: Path, record: ExecutionRecord
    ) -> None:
        request = context.resolve(step["Arguments"])
        entry.job = job_name(step["Name"], context.execution_id)
        call(
            f"create processing job {entry.job}", self.sm.create_processing_job, ProcessingJobName=entry.job, **request
        )
        record.jobs_created["processing"] += 1
        record.instances += int(request["ProcessingResources"]["ClusterConfig"]["InstanceCount"])
        root = folder / step["Name"]
        shutil.rmtree(root, ignore_errors=True)
        for item in request.get("ProcessingInputs", []):
            source = item["S3Input"]
            self._download(source["S3Uri"], _under(root, source["LocalPath"]))
        outputs = request.get("ProcessingOutputConfig", {}).get("Outputs", [])
        for item in outputs:
            _under(root, item["S3Output"]["LocalPath"]).mkdir(parents=True, exist_ok=True)
        app = request["AppSpecification"]
        command = [*app.get("ContainerEntrypoint", []), *app.get("ContainerArguments", [])]
        code, log = self.runner.run(app["ImageUri"], command, root, {**self.env, **request.get("Environment", {})})
        (root / "job.log").write_text(log)
        if code != 0:
            raise StepFailed(f"{entry.job} exited with {code}: {_last_line(log)}")
        for item in outputs:
            self._upload(_under(root, item["S3Output"]["LocalPath"]), item["S3Output"]["S3Uri"])
        properties: dict[str, Any] = {
            "ProcessingJobName": entry.job,
            "ProcessingOutputConfig": {"Outputs": {o["OutputName"]: {"S3Output": o["S3Output"]} for o in outputs}},
        }
        files = {}
        for property_file in step.get("PropertyFiles", []):
            local = next(o["S3Output"]["LocalPath"] for o in outputs if o["OutputName"] == property_file["OutputName"])
            path = _under(root, local) / property_file["FilePath"]
            files[property_file["PropertyFileName"]] = json.loads(path.read_text()) if path.is_file() else None
        context.steps[step["Name"]] = properties
        context.property_files[step["Name"]] = files

    # --- training ---------------------------------------------------------------------------------------------
    def _training(
        self, step: dict[str, Any], context: _Context, entry: StepRecord, folder: Path, record: ExecutionRecord
    ) -> None:
        request = context.resolve(step["Arguments"])
        request.setdefault("StoppingCondition", {"MaxRuntimeInSeconds": 86400})
        entry.job = job_name(step["Name"], context.execution_id)
        call(f"create training job {entry.job}", self.sm.create_training_job, TrainingJobName=entry.job, **request)
        record.jobs_created["training"] += 1
        count = int(request["ResourceConfig"]["InstanceCount"])
        record.instances += count
        hosts = [f"algo-{i + 1}" for i in range(count)]
        root = folder / step["Name"]
        shutil.rmtree(root, ignore_errors=True)
        for i, host in enumerate(hosts):
            config = root / host / "input" / "config"
            config.mkdir(parents=True)
            (config / "hyperparameters.json").write_text(json.dumps(request.get("HyperParameters", {})))
            (config / "resourceconfig.json").write_text(json.dumps({"current_host": host, "hosts": hosts}))
            (config / "inputdataconfig.json").write_text(
                json.dumps({c["ChannelName"]: {"TrainingInputMode": "File"} for c in request["InputDataConfig"]})
            )
            for channel in request["InputDataConfig"]:
                source = channel["DataSource"]["S3DataSource"]
                share = (i, count) if source.get("S3DataDistributionType") == "ShardedByS3Key" else None
                self._download(source["S3Uri"], root / host / "input" / "data" / channel["ChannelName"], share=share)
            (root / host / "model").mkdir()
        image = request["AlgorithmSpecification"]["TrainingImage"]
        env = {**self.env, **request.get("Environment", {})}
        # The instances one after another: each uses every CPU of this machine, as each of SageMaker's would of its own.
        for host in hosts:
            code, log = self.runner.run(image, ["genesig", "train"], root / host, env)
            (root / host / "job.log").write_text(log)
            if code != 0:
                failure = root / host / "output" / "failure"
                reason = failure.read_text() if failure.is_file() else _last_line(log)
                raise StepFailed(f"{entry.job} ({host}) exited with {code}: {reason}")
        model_uri = s3_join(request["OutputDataConfig"]["S3OutputPath"], entry.job, "output", "model.tar.gz")
        write_object(self.s3, model_uri, _pack_models([root / host / "model" for host in hosts]))
        context.steps[step["Name"]] = {"TrainingJobName": entry.job, "ModelArtifacts": {"S3ModelArtifacts": model_uri}}

    # --- S3 ---------------------------------------------------------------------------------------------------------
    def _download(self, uri: str, into: Path, *, share: tuple[int, int] | None = None) -> None:
        """Every object under the prefix, into ``into`` by its key below the prefix; with ``share`` (i, n), the i-th
        of n shares of the keys in order, as ``ShardedByS3Key`` deals them."""
        bucket, prefix = split_s3(uri)
        keys = sorted(
            o["Key"]
            for o in paginate(f"list {uri}", self.s3, "list_objects_v2", "Contents", Bucket=bucket, Prefix=prefix)
        )
        if share is not None:
            keys = keys[share[0] :: share[1]]
        into.mkdir(parents=True, exist_ok=True)

        def fetch(key: str) -> None:
            relative = key[len(prefix) :].lstrip("/") or Path(key).name
            target = into / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(
                call(f"read s3://{bucket}/{key}", self.s3.get_object, Bucket=bucket, Key=key)["Body"].read()
            )

        with ThreadPoolExecutor(max_workers=TRANSFER_WORKERS) as pool:
            list(pool.map(fetch, keys))

    def _upload(self, folder: Path, uri: str) -> None:
        files = [p for p in sorted(folder.rglob("*")) if p.is_file()]
        with ThreadPoolExecutor(max_workers=TRANSFER_WORKERS) as pool:
            list(
                pool.map(
                    lambda p: write_object(self.s3, s3_join(uri, str(p.relative_to(folder))), p.read_bytes()), files
                )
            )


def _pack_models(folders: list[Path]) -> bytes:
    """``model.tar.gz`` of the instances' ``/opt/ml/model`` folders."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for folder in folders:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    tar.add(path, arcname=str(path.relative_to(folder)))
    return buffer.getvalue()


def job_name(step: str, execution_id: str) -> str:
    """A job name SageMaker accepts (at most 63 letters, digits and hyphens), distinct for every job."""
    return entity_name(f"{step}-{execution_id}-{uuid.uuid4().hex[:6]}", 63)


def _under(root: Path, container_path: str) -> Path:
    return root / Path(container_path).relative_to(OPT_ML)


def _last_line(log: str) -> str:
    lines = [line for line in log.strip().splitlines() if line.strip()]
    return lines[-1][-500:] if lines else "no output"


def _typed(parameter: dict[str, Any], value: Any) -> Any:
    kind = parameter.get("Type", "String")
    if value is None:
        return None
    if kind == "Integer":
        return int(value)
    if kind == "Float":
        return float(value)
    if kind == "Boolean":
        return str(value).lower() == "true"
    return str(value)


def _jsonable(record: ExecutionRecord) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(record)


@dataclass
class _Context:
    """What an expression in a definition can refer to: parameters, the execution, earlier steps."""

    parameters: dict[str, Any]
    execution_id: str
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    property_files: dict[str, dict[str, Any]] = field(default_factory=dict)

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, dict):
            return value
        if set(value) == {"Get"}:
            return self.get(value["Get"])
        if set(value) == {"Std:Join"}:
            join = value["Std:Join"]
            return join["On"].join(_text(self.resolve(v)) for v in join["Values"])
        if set(value) == {"Std:JsonGet"}:
            return self.json_get(value["Std:JsonGet"])
        return {k: self.resolve(v) for k, v in value.items()}

    def get(self, path: str) -> Any:
        if path.startswith("Parameters."):
            return self.parameters[path.removeprefix("Parameters.")]
        if path == "Execution.PipelineExecutionId":
            return self.execution_id
        if path.startswith("Steps."):
            step, _, rest = path.removeprefix("Steps.").partition(".")
            node: Any = self.steps[step]
            for part in _path_parts(rest):
                node = node[part]
            return node
        raise StepFailed(f"cannot resolve {path} here")

    def json_get(self, spec: dict[str, Any]) -> Any:
        reference = spec["PropertyFile"]["Get"]  # Steps.<step>.PropertyFiles.<name>
        _, step, _, name = reference.split(".", 3)
        node: Any = self.property_files.get(step, {}).get(name)
        for part in _path_parts(spec["Path"]):
            if node is None:
                break
            node = node[part] if isinstance(node, dict) else node[int(part)]
        return node

    def condition(self, spec: dict[str, Any]) -> bool:
        left, right = self.resolve(spec["LeftValue"]), self.resolve(spec["RightValue"])
        compare = {
            "Equals": lambda a, b: a == b,
            "GreaterThanOrEqualTo": lambda a, b: a >= b,
            "GreaterThan": lambda a, b: a > b,
            "LessThanOrEqualTo": lambda a, b: a <= b,
            "LessThan": lambda a, b: a < b,
        }
        if spec["Type"] not in compare:
            raise StepFailed(f"condition {spec['Type']} is not evaluated here")
        return bool(compare[spec["Type"]](left, right))


def _path_parts(path: str) -> list[str]:
    """``ProcessingOutputConfig.Outputs['set'].S3Output.S3Uri`` → its parts."""
    parts = []
    for piece in path.replace("[", ".").replace("]", "").split("."):
        if piece:
            parts.append(piece.strip("'\""))
    return parts


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return repr(value)
    return str(value)
