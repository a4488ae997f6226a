"""The SageMaker Pipeline (SDK v3): PreprocessCohort → TrainModel → EvaluateModel → CheckMetric →
RegisterModel → DeployToMme, or a Fail step that states the metric and the threshold.

Every job runs our training image (``IMAGE-train``: the project, its pinned pipeline dependencies and
CPU torch): the processing steps call ``genesig step ...`` (the same code as ``genesig run-local``),
the training job runs the image's ``train`` entry (SageMaker's training-container contract), and
nothing is installed at run time. The registered model package names the serving image, which has no
torch. No code is uploaded, so the definition builds offline.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

PIPELINE_NAME = "genesig-mme"
DEFAULT_REGION = "us-east-1"
PROCESSING = "/opt/ml/processing"


@dataclass(frozen=True)
class PipelineConfig:
    """What is fixed when the pipeline is created (per-execution choices are pipeline Parameters)."""

    role_arn: str = "arn:aws:iam::123456789012:role/genesig-sagemaker"
    bucket: str = "genesig-artifacts"
    region: str = DEFAULT_REGION
    name: str = PIPELINE_NAME
    # The jobs' image and the image a registered model is served with (build_and_push.sh builds both).
    training_image_uri: str = "123456789012.dkr.ecr.us-east-1.amazonaws.com/genesig-mme-train:latest"
    serving_image_uri: str = "123456789012.dkr.ecr.us-east-1.amazonaws.com/genesig-mme:latest"
    endpoint_url: str | None = None

    @property
    def base_uri(self) -> str:
        return f"s3://{self.bucket}/genesig"


def _sdk_environment() -> None:
    # The SDK reads these at import: a region is required, telemetry and role validation call AWS.
    os.environ.setdefault("AWS_DEFAULT_REGION", DEFAULT_REGION)
    os.environ.setdefault("SAGEMAKER_VALIDATE_ROLE", "false")
    os.environ.setdefault("SAGEMAKER_TELEMETRY_OPT_OUT", "true")


def get_pipeline(config: PipelineConfig | None = None):  # type: ignore[no-untyped-def]
    """Build the pipeline; no AWS call is made until it is upserted or started."""
    config = config or PipelineConfig()
    _sdk_environment()
    import boto3
    from sagemaker.core.processing import Processor
    from sagemaker.core.shapes import (
        MetricsSource,
        ModelMetrics,
        ModelQuality,
        ProcessingInput,
        ProcessingOutput,
        ProcessingS3Input,
        ProcessingS3Output,
    )
    from sagemaker.core.workflow.conditions import ConditionGreaterThanOrEqualTo
    from sagemaker.core.workflow.execution_variables import ExecutionVariables
    from sagemaker.core.workflow.functions import Join, JsonGet
    from sagemaker.core.workflow.parameters import ParameterFloat, ParameterString
    from sagemaker.core.workflow.pipeline_context import PipelineSession
    from sagemaker.core.workflow.properties import PropertyFile
    from sagemaker.mlops.workflow.condition_step import ConditionStep
    from sagemaker.mlops.workflow.fail_step import FailStep
    from sagemaker.mlops.workflow.model_step import ModelStep
    from sagemaker.mlops.workflow.pipeline import Pipeline
    from sagemaker.mlops.workflow.steps import ProcessingStep, TrainingStep
    from sagemaker.serve.model_builder import ModelBuilder
    from sagemaker.train.configs import Compute, InputData, OutputDataConfig
    from sagemaker.train.model_trainer import ModelTrainer

    boto_session = boto3.Session(region_name=config.region)
    session = PipelineSession(boto_session=boto_session, default_bucket=config.bucket)
    # The SDK checks that even an explicitly named default bucket exists (an S3 call); we upload nothing.
    session._default_bucket = config.bucket

    input_data = ParameterString("InputDataUri", default_value=f"{config.base_uri}/data/")
    signature = ParameterString("Signature", default_value="ALL")
    signature_set = ParameterString("SignatureSetUri", default_value=f"{config.base_uri}/signatures/")
    processing_type = ParameterString("ProcessingInstanceType", default_value="ml.m5.large")
    training_type = ParameterString("TrainingInstanceType", default_value="ml.m5.large")
    threshold = ParameterFloat("MetricThreshold", default_value=0.6)
    approval = ParameterString("ModelApprovalStatus", default_value="PendingManualApproval")
    mme_prefix = ParameterString("MmePrefix", default_value=f"{config.base_uri}/mme/")
    image = ParameterString("TrainingImageUri", default_value=config.training_image_uri)
    serving_image = ParameterString("ServingImageUri", default_value=config.serving_image_uri)
    parameters = [
        input_data,
        signature,
        signature_set,
        processing_type,
        training_type,
        threshold,
        approval,
        mme_prefix,
        image,
        serving_image,
    ]

    def processor(step: str) -> Processor:
        return Processor(
            role=config.role_arn,
            image_uri=image,
            instance_count=1,
            instance_type=processing_type,
            entrypoint=["genesig", "step", step],
            sagemaker_session=session,
            base_job_name=f"genesig-{step}",
        )

    def s3_input(name: str, uri: object, local: str) -> ProcessingInput:
        return ProcessingInput(
            input_name=name,
            s3_input=ProcessingS3Input(s3_uri=uri, local_path=local, s3_data_type="S3Prefix", s3_input_mode="File"),
        )

    def s3_output(name: str, local: str) -> ProcessingOutput:
        # Per execution: executions for different signatures run at the same time and must not share outputs.
        destination = Join(on="/", values=[config.base_uri, "runs", ExecutionVariables.PIPELINE_EXECUTION_ID, name])
        return ProcessingOutput(
            output_name=name,
            s3_output=ProcessingS3Output(s3_uri=destination, local_path=local, s3_upload_mode="EndOfJob"),
        )

    preprocess = ProcessingStep(
        name="PreprocessCohort",
        step_args=processor("preprocess").run(
            inputs=[
                s3_input("data", input_data, f"{PROCESSING}/input/data"),
                s3_input("signatures", signature_set, f"{PROCESSING}/input/signatures"),
            ],
            outputs=[s3_output("prepared", f"{PROCESSING}/prepared")],
            arguments=[
                "--data",
                f"{PROCESSING}/input/data",
                "--signatures",
                f"{PROCESSING}/input/signatures",
                "--signature",
                signature,
                "--out",
                f"{PROCESSING}/prepared",
            ],
        ),
    )
    prepared_uri = preprocess.properties.ProcessingOutputConfig.Outputs["prepared"].S3Output.S3Uri

    trainer = ModelTrainer(
        training_image=image,
        role=config.role_arn,
        sagemaker_session=session,
        compute=Compute(instance_type=training_type, instance_count=1),
        hyperparameters={"model": "linear", "l2": "0.1", "cv_repeats": "5", "model_package_group_prefix": "genesig"},
        output_data_config=OutputDataConfig(s3_output_path=f"{config.base_uri}/models"),
        base_job_name="genesig-train",
    )
    train = TrainingStep(
        name="TrainModel",
        step_args=trainer.train(input_data_config=[InputData(channel_name="prepared", data_source=prepared_uri)]),
    )
    model_uri = train.properties.ModelArtifacts.S3ModelArtifacts

    evaluation_file = PropertyFile(name="EvaluationReport", output_name="evaluation", path="evaluation.json")
    evaluate = ProcessingStep(
        name="EvaluateModel",
        step_args=processor("evaluate").run(
            inputs=[
                s3_input("prepared", prepared_uri, f"{PROCESSING}/prepared"),
                s3_input("model", model_uri, f"{PROCESSING}/model"),
            ],
            outputs=[s3_output("evaluation", f"{PROCESSING}/evaluation")],
            arguments=[
                "--prepared",
                f"{PROCESSING}/prepared",
                "--model",
                f"{PROCESSING}/model",
                "--out",
                f"{PROCESSING}/evaluation",
            ],
        ),
        property_files=[evaluation_file],
    )
    evaluation_uri = evaluate.properties.ProcessingOutputConfig.Outputs["evaluation"].S3Output.S3Uri
    metric = JsonGet(step_name=evaluate.name, property_file=evaluation_file, json_path="cross_validation.mean")

    group = Join(on="-", values=["genesig", signature])
    register = ModelStep(
        name="RegisterModel",
        step_args=ModelBuilder(
            image_uri=serving_image, s3_model_data_url=model_uri, role_arn=config.role_arn, sagemaker_session=session
        ).register(
            model_package_group_name=group,
            content_types=["application/json", "text/csv"],
            response_types=["application/json", "text/csv"],
            inference_instances=["ml.m5.large"],
            approval_status=approval,
            model_metrics=ModelMetrics(
                model_quality=ModelQuality(
                    statistics=MetricsSource(
                        content_type="application/json", s3_uri=Join(on="/", values=[evaluation_uri, "evaluation.json"])
                    )
                )
            ),
        ),
    )
    deploy = ProcessingStep(
        name="DeployToMme",
        step_args=processor("deploy-sagemaker").run(
            arguments=["--model-package-arn", register.properties.ModelPackageArn, "--prefix", mme_prefix],
        ),
    )
    fail = FailStep(
        name="MetricBelowThreshold",
        error_message=Join(on=" ", values=["cross-validated metric", metric, "is below the threshold", threshold]),
    )
    check = ConditionStep(
        name="CheckMetric",
        conditions=[ConditionGreaterThanOrEqualTo(left=metric, right=threshold)],
        if_steps=[register, deploy],
        else_steps=[fail],
    )
    return Pipeline(
        name=config.name, parameters=parameters, steps=[preprocess, train, evaluate, check], sagemaker_session=session
    )


def definition_json(config: PipelineConfig | None = None) -> str:
    return str(get_pipeline(config).definition())
