"""The one-signature SageMaker Pipeline (SDK v3), for one-off retrains: PreprocessCohort → TrainModel →
EvaluateModel → CheckMetric → RegisterModel → DeployToMme, each step a small builder.

Every job runs our training image (``IMAGE-train``: the project, its pinned pipeline dependencies and
CPU torch): the processing steps call ``genesig step ...`` (the same code as ``genesig run-local``),
the training job runs the image's ``train`` entry (SageMaker's training-container contract), and
nothing is installed at run time. The registered model package names the serving image, which has no
torch. No code is uploaded, so the definition builds offline.

The gate is decided in EvaluateModel by the same code as ``run-local`` and written into evaluation.json;
CheckMetric reads that verdict. A model below the gate is a result, not a failure: the execution
succeeds without registering it, and ``genesig pipeline status`` says "below threshold" with the reason.
RegisterModel is our own job (``genesig step register-sagemaker``), the registration code of the
signature-set run, rather than the SDK's ModelBuilder, which looks up (and creates) a default S3 bucket
while the definition is built.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from genesig.pipeline.settings import CohortSettings, GateSettings, TrainSettings, as_strings

PIPELINE_NAME = "genesig-mme"
DEFAULT_REGION = "us-east-1"
PROCESSING = "/opt/ml/processing"
# Step names, also read back by `genesig pipeline status`.
PREPROCESS, TRAIN, EVALUATE, CHECK, REGISTER, DEPLOY = (
    "PreprocessCohort",
    "TrainModel",
    "EvaluateModel",
    "CheckMetric",
    "RegisterModel",
    "DeployToMme",
)


# What an execution may be started with (genesig pipeline start --param NAME=VALUE), per pipeline.
PARAMETER_NAMES = (
    "InputDataUri",
    "Signature",
    "SignatureSetUri",
    "IdColumn",
    "EventColumn",
    "TimeColumn",
    "ExpressionValues",
    "ProcessingInstanceType",
    "TrainingInstanceType",
    "MetricThreshold",
    "GateOn",
    "Fdr",
    "Permutations",
    "ModelApprovalStatus",
    "MmePrefix",
    "TrainingImageUri",
    "ServingImageUri",
)
SET_PARAMETER_NAMES = (*(n for n in PARAMETER_NAMES if n != "Signature"), "ShardCount", "Competitive", "RandomSets")
# The signature-set run's steps.
PREPARE_SET, TRAIN_SET, REGISTER_SET = "PrepareSignatureSet", "TrainSignatures", "RegisterSignatures"
DEFAULT_SHARDS = 4


@dataclass(frozen=True)
class PipelineConfig:
    """What is fixed when the pipeline is created (per-execution choices are pipeline Parameters)."""

    role_arn: str
    bucket: str
    region: str = DEFAULT_REGION
    name: str = PIPELINE_NAME
    # The jobs' image and the image a registered model is served with (build_and_push.sh builds both).
    training_image_uri: str = "ACCOUNT.dkr.ecr.REGION.amazonaws.com/genesig-mme-train:latest"
    serving_image_uri: str = "ACCOUNT.dkr.ecr.REGION.amazonaws.com/genesig-mme:latest"
    endpoint_url: str | None = None

    @property
    def base_uri(self) -> str:
        return f"s3://{self.bucket}/genesig"

    @property
    def data_uri(self) -> str:
        """Where the cohort goes by default: ``s3://BUCKET/genesig/data/`` holding one CSV/TSV/Parquet file."""
        return f"{self.base_uri}/data/"

    @property
    def signatures_uri(self) -> str:
        return f"{self.base_uri}/signatures/"

    @property
    def set_name(self) -> str:
        """The signature-set run's pipeline, beside the one-signature pipeline."""
        return f"{self.name}-set"

    @property
    def packages_uri(self) -> str:
        """Where registered artifacts are kept (each package's ModelDataUrl)."""
        return f"{self.base_uri}/packages/"

    @property
    def mme_prefix(self) -> str:
        return f"{self.base_uri}/mme/"


def _sdk_environment() -> None:
    # The SDK reads these at import: a region is required, telemetry and role validation call AWS.
    os.environ.setdefault("AWS_DEFAULT_REGION", DEFAULT_REGION)
    os.environ.setdefault("SAGEMAKER_VALIDATE_ROLE", "false")
    os.environ.setdefault("SAGEMAKER_TELEMETRY_OPT_OUT", "true")


def _drop_job_name_notice(record: logging.LogRecord) -> bool:
    # The SDK warns, once per step, that it leaves job names out of the definition: SageMaker names each job at
    # run time, which is what we want; the notice only buries the output of `upsert`.
    return not record.getMessage().startswith("Popping out ")


def import_sdk() -> None:
    """Import the SDK with its environment set; a missing ``pipeline`` extra is one clear line."""
    _sdk_environment()
    logging.getLogger("sagemaker.core.workflow.utilities").addFilter(_drop_job_name_notice)
    # Without the SDK this raises ModuleNotFoundError, which the CLI turns into one line naming the extra.
    import sagemaker.mlops.workflow.pipeline  # noqa: F401


@dataclass
class _Context:
    """What every step builder needs: the configuration, the session and the pipeline parameters."""

    config: PipelineConfig
    session: Any
    parameters: dict[str, Any]

    def __getitem__(self, name: str) -> Any:
        return self.parameters[name]


def _parameters(config: PipelineConfig, names: tuple[str, ...]) -> dict[str, Any]:
    """Everything an operator may change per execution (a plain value in ``parameters=`` is dropped by the SDK)."""
    from sagemaker.core.workflow.parameters import ParameterFloat, ParameterInteger, ParameterString

    gate, cohort = GateSettings(), CohortSettings()
    known = {
        p.name: p
        for p in (
            ParameterString("InputDataUri", default_value=config.data_uri),
            ParameterString("Signature", default_value="ALL"),
            ParameterString("SignatureSetUri", default_value=config.signatures_uri),
            ParameterString("IdColumn", default_value=cohort.id_column),
            ParameterString("EventColumn", default_value=cohort.event_column),
            ParameterString("TimeColumn", default_value=cohort.time_column or ""),
            ParameterString("ExpressionValues", default_value=cohort.values),
            ParameterInteger("Permutations", default_value=gate.permutations),
            ParameterFloat("Fdr", default_value=gate.fdr),
            ParameterString("Competitive", default_value=gate.competitive),
            ParameterInteger("RandomSets", default_value=gate.random_sets),
            ParameterInteger("ShardCount", default_value=DEFAULT_SHARDS),
            ParameterString("ProcessingInstanceType", default_value="ml.m5.large"),
            ParameterString("TrainingInstanceType", default_value="ml.m5.large"),
            ParameterFloat("MetricThreshold", default_value=gate.threshold),
            ParameterString("GateOn", default_value=gate.gate_on),
            ParameterString("ModelApprovalStatus", default_value="PendingManualApproval"),
            ParameterString("MmePrefix", default_value=config.mme_prefix),
            ParameterString("TrainingImageUri", default_value=config.training_image_uri),
            ParameterString("ServingImageUri", default_value=config.serving_image_uri),
        )
    }
    return {name: known[name] for name in names}


def _text(value: Any) -> Any:
    """A numeric parameter as text: container arguments and hyperparameters are strings."""
    from sagemaker.core.workflow.functions import Join

    return Join(on="", values=[value])


def _column_arguments(ctx: _Context) -> list[Any]:
    """The cohort's column names and the scale of its values, as the step entry points take them."""
    return [
        "--id-column",
        ctx["IdColumn"],
        "--event-column",
        ctx["EventColumn"],
        "--time-column",
        ctx["TimeColumn"],
        "--values",
        ctx["ExpressionValues"],
    ]


def _retry_policies(job: bool) -> list[Any]:
    """Throttling and service faults are retried for every step; capacity, limits and internal errors for jobs."""
    from sagemaker.mlops.workflow.retry import (
        SageMakerJobExceptionTypeEnum,
        SageMakerJobStepRetryPolicy,
        StepExceptionTypeEnum,
        StepRetryPolicy,
    )

    policies: list[Any] = [
        StepRetryPolicy(
            exception_types=[StepExceptionTypeEnum.THROTTLING, StepExceptionTypeEnum.SERVICE_FAULT],
            interval_seconds=5,
            backoff_rate=2.0,
            max_attempts=5,
        )
    ]
    if job:
        policies.append(
            SageMakerJobStepRetryPolicy(
                exception_types=[
                    SageMakerJobExceptionTypeEnum.CAPACITY_ERROR,
                    SageMakerJobExceptionTypeEnum.RESOURCE_LIMIT,
                    SageMakerJobExceptionTypeEnum.INTERNAL_ERROR,
                ],
                interval_seconds=60,
                backoff_rate=2.0,
                max_attempts=3,
            )
        )
    return policies


def _processor(ctx: _Context, step: str) -> Any:
    from sagemaker.core.processing import Processor

    return Processor(
        role=ctx.config.role_arn,
        image_uri=ctx["TrainingImageUri"],
        instance_count=1,
        instance_type=ctx["ProcessingInstanceType"],
        entrypoint=["genesig", "step", step],
        sagemaker_session=ctx.session,
        base_job_name=f"genesig-{step}",
    )


def _input(name: str, uri: object, local: str) -> Any:
    from sagemaker.core.shapes import ProcessingInput, ProcessingS3Input

    return ProcessingInput(
        input_name=name,
        s3_input=ProcessingS3Input(s3_uri=uri, local_path=local, s3_data_type="S3Prefix", s3_input_mode="File"),
    )


def _output(ctx: _Context, name: str, local: str) -> Any:
    """Per execution: executions for different signatures run at the same time and must not share outputs."""
    from sagemaker.core.shapes import ProcessingOutput, ProcessingS3Output
    from sagemaker.core.workflow.execution_variables import ExecutionVariables
    from sagemaker.core.workflow.functions import Join

    destination = Join(on="/", values=[ctx.config.base_uri, "runs", ExecutionVariables.PIPELINE_EXECUTION_ID, name])
    return ProcessingOutput(
        output_name=name,
        s3_output=ProcessingS3Output(s3_uri=destination, local_path=local, s3_upload_mode="EndOfJob"),
    )


def _preprocess_step(ctx: _Context) -> Any:
    """The cohort and signature set in, the signature's prepared split out."""
    from sagemaker.mlops.workflow.steps import ProcessingStep

    return ProcessingStep(
        name=PREPROCESS,
        step_args=_processor(ctx, "preprocess").run(
            inputs=[
                _input("data", ctx["InputDataUri"], f"{PROCESSING}/input/data"),
                _input("signatures", ctx["SignatureSetUri"], f"{PROCESSING}/input/signatures"),
            ],
            outputs=[_output(ctx, "prepared", f"{PROCESSING}/prepared")],
            arguments=[
                "--data",
                f"{PROCESSING}/input/data",
                "--signatures",
                f"{PROCESSING}/input/signatures",
                "--signature",
                ctx["Signature"],
                *_column_arguments(ctx),
                "--out",
                f"{PROCESSING}/prepared",
            ],
        ),
        retry_policies=_retry_policies(job=True),
    )


def _train_step(ctx: _Context, preprocess: Any) -> Any:
    from sagemaker.mlops.workflow.steps import TrainingStep
    from sagemaker.train.configs import Compute, InputData, OutputDataConfig
    from sagemaker.train.model_trainer import ModelTrainer

    trainer = ModelTrainer(
        training_image=ctx["TrainingImageUri"],
        role=ctx.config.role_arn,
        sagemaker_session=ctx.session,
        compute=Compute(instance_type=ctx["TrainingInstanceType"], instance_count=1),
        hyperparameters=as_strings(TrainSettings()),
        output_data_config=OutputDataConfig(s3_output_path=f"{ctx.config.base_uri}/models"),
        base_job_name="genesig-train",
    )
    prepared_uri = preprocess.properties.ProcessingOutputConfig.Outputs["prepared"].S3Output.S3Uri
    return TrainingStep(
        name=TRAIN,
        step_args=trainer.train(input_data_config=[InputData(channel_name="prepared", data_source=prepared_uri)]),
        retry_policies=_retry_policies(job=True),
    )


def _evaluate_step(ctx: _Context, preprocess: Any, train: Any) -> tuple[Any, Any]:
    """Held-out evaluation and the gate's verdict (the same code as run-local) in evaluation.json."""
    from sagemaker.core.workflow.properties import PropertyFile
    from sagemaker.mlops.workflow.steps import ProcessingStep

    evaluation = PropertyFile(name="EvaluationReport", output_name="evaluation", path="evaluation.json")
    step = ProcessingStep(
        name=EVALUATE,
        step_args=_processor(ctx, "evaluate").run(
            inputs=[
                _input(
                    "prepared",
                    preprocess.properties.ProcessingOutputConfig.Outputs["prepared"].S3Output.S3Uri,
                    f"{PROCESSING}/prepared",
                ),
                _input("model", train.properties.ModelArtifacts.S3ModelArtifacts, f"{PROCESSING}/model"),
            ],
            outputs=[_output(ctx, "evaluation", f"{PROCESSING}/evaluation")],
            arguments=[
                "--prepared",
                f"{PROCESSING}/prepared",
                "--model",
                f"{PROCESSING}/model",
                "--out",
                f"{PROCESSING}/evaluation",
                "--threshold",
                _text(ctx["MetricThreshold"]),
                "--gate-on",
                ctx["GateOn"],
                "--fdr",
                _text(ctx["Fdr"]),
                "--permutations",
                _text(ctx["Permutations"]),
            ],
        ),
        property_files=[evaluation],
        retry_policies=_retry_policies(job=True),
    )
    return step, evaluation


def _register_step(ctx: _Context, train: Any, evaluate: Any) -> tuple[Any, Any]:
    """The model package in the signature's group, through the same registration code as the signature-set run:
    the group is created if missing, an unchanged model is not registered again, evaluation.json is attached as
    model-quality statistics, and the artifact's file name and sha256 are recorded as package metadata."""
    from sagemaker.core.workflow.properties import PropertyFile
    from sagemaker.mlops.workflow.steps import ProcessingStep

    registered = PropertyFile(name="Registration", output_name="registration", path="registration.json")
    evaluation_uri = evaluate.properties.ProcessingOutputConfig.Outputs["evaluation"].S3Output.S3Uri
    step = ProcessingStep(
        name=REGISTER,
        step_args=_processor(ctx, "register-sagemaker").run(
            inputs=[_input("evaluation", evaluation_uri, f"{PROCESSING}/evaluation")],
            outputs=[_output(ctx, "registration", f"{PROCESSING}/registration")],
            arguments=[
                "--model-uri",
                train.properties.ModelArtifacts.S3ModelArtifacts,
                "--evaluation",
                f"{PROCESSING}/evaluation",
                "--serving-image-uri",
                ctx["ServingImageUri"],
                "--approval-status",
                ctx["ModelApprovalStatus"],
                "--package-prefix",
                ctx.config.packages_uri,
                "--out",
                f"{PROCESSING}/registration",
            ],
        ),
        property_files=[registered],
        retry_policies=_retry_policies(job=True),
    )
    return step, registered


def _deploy_step(ctx: _Context, registered: Any) -> Any:
    """Copies the package into the MME prefix when it is Approved (else reports it skipped; `genesig sync` later)."""
    from sagemaker.core.workflow.functions import JsonGet
    from sagemaker.mlops.workflow.steps import ProcessingStep

    package = JsonGet(step_name=REGISTER, property_file=registered, json_path="package_arn")
    return ProcessingStep(
        name=DEPLOY,
        step_args=_processor(ctx, "deploy-sagemaker").run(
            arguments=["--model-package-arn", package, "--prefix", ctx["MmePrefix"]],
        ),
        retry_policies=_retry_policies(job=True),
    )


def get_pipeline(config: PipelineConfig) -> Any:
    """Build the pipeline; no AWS call is made until it is upserted or started."""
    import_sdk()
    import boto3
    from sagemaker.core.workflow.conditions import ConditionEquals
    from sagemaker.core.workflow.functions import JsonGet
    from sagemaker.core.workflow.pipeline_context import PipelineSession
    from sagemaker.mlops.workflow.condition_step import ConditionStep
    from sagemaker.mlops.workflow.pipeline import Pipeline

    session = PipelineSession(boto_session=boto3.Session(region_name=config.region), default_bucket=config.bucket)
    ctx = _Context(config, session, _parameters(config, PARAMETER_NAMES))
    preprocess = _preprocess_step(ctx)
    train = _train_step(ctx, preprocess)
    evaluate, evaluation = _evaluate_step(ctx, preprocess, train)
    register, registered = _register_step(ctx, train, evaluate)
    check = ConditionStep(
        name=CHECK,
        conditions=[
            ConditionEquals(
                left=JsonGet(step_name=EVALUATE, property_file=evaluation, json_path="gate.passed"), right=True
            )
        ],
        if_steps=[register, _deploy_step(ctx, registered)],
        else_steps=[],
    )
    return Pipeline(
        name=config.name,
        parameters=list(ctx.parameters.values()),
        steps=[preprocess, train, evaluate, check],
        sagemaker_session=session,
    )


def definition_json(config: PipelineConfig) -> str:
    return str(get_pipeline(config).definition())


# --- the signature-set run ----------------------------------------------------------------------------------


def _prepare_set_step(ctx: _Context) -> Any:
    from sagemaker.mlops.workflow.steps import ProcessingStep

    return ProcessingStep(
        name=PREPARE_SET,
        step_args=_processor(ctx, "prepare-set").run(
            inputs=[
                _input("data", ctx["InputDataUri"], f"{PROCESSING}/input/data"),
                _input("signatures", ctx["SignatureSetUri"], f"{PROCESSING}/input/signatures"),
            ],
            outputs=[_output(ctx, "set", f"{PROCESSING}/set")],
            arguments=[
                "--data",
                f"{PROCESSING}/input/data",
                "--signatures",
                f"{PROCESSING}/input/signatures",
                "--shards",
                _text(ctx["ShardCount"]),
                *_column_arguments(ctx),
                "--permutations",
                _text(ctx["Permutations"]),
                "--competitive",
                ctx["Competitive"],
                # The random sets are dealt here, with the sizes: the instances read their count from the shards.
                "--random-sets",
                _text(ctx["RandomSets"]),
                "--out",
                f"{PROCESSING}/set",
            ],
        ),
        retry_policies=_retry_policies(job=True),
    )


def _results_uri(ctx: _Context) -> Any:
    from sagemaker.core.workflow.execution_variables import ExecutionVariables
    from sagemaker.core.workflow.functions import Join

    return Join(on="/", values=[ctx.config.base_uri, "runs", ExecutionVariables.PIPELINE_EXECUTION_ID, "results"])


def _train_set_step(ctx: _Context, prepare: Any) -> Any:
    """One training job, ``ShardCount`` instances: the cohort to every instance, one shard file to each."""
    from sagemaker.mlops.workflow.steps import TrainingStep
    from sagemaker.train.configs import Compute, InputData, OutputDataConfig, S3DataSource
    from sagemaker.train.model_trainer import ModelTrainer

    set_uri = prepare.properties.ProcessingOutputConfig.Outputs["set"].S3Output.S3Uri

    def channel(name: str, distribution: str) -> Any:
        from sagemaker.core.workflow.functions import Join

        source = S3DataSource(
            s3_data_type="S3Prefix",
            s3_uri=Join(on="/", values=[set_uri, name]),
            s3_data_distribution_type=distribution,
        )
        return InputData(channel_name=name, data_source=source)

    hyperparameters: dict[str, Any] = {
        **as_strings(TrainSettings()),
        "threshold": _text(ctx["MetricThreshold"]),
        "gate_on": ctx["GateOn"],
        "id_column": ctx["IdColumn"],
        "event_column": ctx["EventColumn"],
        "time_column": ctx["TimeColumn"],
        "values": ctx["ExpressionValues"],
        "permutations": _text(ctx["Permutations"]),
        "competitive": ctx["Competitive"],
        "output_uri": _results_uri(ctx),
    }
    trainer = ModelTrainer(
        training_image=ctx["TrainingImageUri"],
        role=ctx.config.role_arn,
        sagemaker_session=ctx.session,
        compute=Compute(instance_type=ctx["TrainingInstanceType"], instance_count=ctx["ShardCount"]),
        hyperparameters=hyperparameters,
        output_data_config=OutputDataConfig(s3_output_path=f"{ctx.config.base_uri}/models"),
        base_job_name="genesig-train-set",
    )
    return TrainingStep(
        name=TRAIN_SET,
        step_args=trainer.train(
            input_data_config=[channel("cohort", "FullyReplicated"), channel("shards", "ShardedByS3Key")]
        ),
        depends_on=[prepare],
        retry_policies=_retry_policies(job=True),
    )


def _register_set_step(ctx: _Context, prepare: Any, train: Any) -> Any:
    from sagemaker.core.workflow.properties import PropertyFile
    from sagemaker.mlops.workflow.steps import ProcessingStep

    report = PropertyFile(name="RunReport", output_name="report", path="report.json")
    return ProcessingStep(
        name=REGISTER_SET,
        step_args=_processor(ctx, "register-set").run(
            inputs=[
                _input("results", _results_uri(ctx), f"{PROCESSING}/results"),
                _input(
                    "set", prepare.properties.ProcessingOutputConfig.Outputs["set"].S3Output.S3Uri, f"{PROCESSING}/set"
                ),
            ],
            outputs=[_output(ctx, "report", f"{PROCESSING}/report")],
            arguments=[
                "--results",
                f"{PROCESSING}/results",
                "--set",
                f"{PROCESSING}/set",
                "--package-prefix",
                ctx.config.packages_uri,
                "--serving-image-uri",
                ctx["ServingImageUri"],
                "--approval-status",
                ctx["ModelApprovalStatus"],
                "--mme-prefix",
                ctx["MmePrefix"],
                "--fdr",
                _text(ctx["Fdr"]),
                "--permutations",
                _text(ctx["Permutations"]),
                "--competitive",
                ctx["Competitive"],
                "--random-sets",
                _text(ctx["RandomSets"]),
                "--out",
                f"{PROCESSING}/report",
            ],
        ),
        property_files=[report],
        depends_on=[train],
        retry_policies=_retry_policies(job=True),
    )


def get_set_pipeline(config: PipelineConfig) -> Any:
    """The signature-set run: PrepareSignatureSet → TrainSignatures (ShardCount instances) → RegisterSignatures."""
    import_sdk()
    import boto3
    from sagemaker.core.workflow.pipeline_context import PipelineSession
    from sagemaker.mlops.workflow.pipeline import Pipeline

    session = PipelineSession(boto_session=boto3.Session(region_name=config.region), default_bucket=config.bucket)
    ctx = _Context(config, session, _parameters(config, SET_PARAMETER_NAMES))
    prepare = _prepare_set_step(ctx)
    train = _train_set_step(ctx, prepare)
    register = _register_set_step(ctx, prepare, train)
    return Pipeline(
        name=config.set_name,
        parameters=list(ctx.parameters.values()),
        steps=[prepare, train, register],
        sagemaker_session=session,
    )


def set_definition_json(config: PipelineConfig) -> str:
    return str(get_set_pipeline(config).definition())
