"""The SageMaker Pipeline definition: builds offline, validates against AWS's schema, parameters and wiring."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from genesig.pipeline.sagemaker.pipeline import PipelineConfig, definition_json

SCHEMA = Path(__file__).resolve().parents[2].parent / "shared" / "schemas" / "sagemaker-pipeline-definition.schema.json"
STEP_NAMES = ["PreprocessCohort", "TrainModel", "EvaluateModel", "CheckMetric"]
PARAMETERS = {
    "InputDataUri",
    "Signature",
    "SignatureSetUri",
    "ProcessingInstanceType",
    "TrainingInstanceType",
    "MetricThreshold",
    "GateOn",
    "Fdr",
    "Permutations",
    "IdColumn",
    "EventColumn",
    "TimeColumn",
    "ExpressionValues",
    "ModelApprovalStatus",
    "MmePrefix",
    "TrainingImageUri",
    "ServingImageUri",
}


def corrected_schema() -> dict[str, Any]:
    """AWS's published schema (April 2025) with the corrections the live API needs, each listed here.

    1. ``Std:Join`` is unsatisfiable as published (``required: [Values]`` beside ``additionalProperties: false``
       and no ``properties``); the API takes ``{"On": str, "Values": [...]}``.
    2. ``Std:JsonGet`` (how a condition reads a property file such as evaluation.json) is missing.
    3. Top-level ``PipelineExperimentConfig`` and ``MlflowConfig``, and a training input's
       ``S3DataDistributionType`` and output ``CompressionType``, postdate the schema; the SDK always writes them.
    4. A processing step's ``PropertyFiles`` (what ``JsonGet`` reads) is missing.
    5. ``RetryPolicies`` on steps (the SDK's StepRetryPolicy and SageMakerJobStepRetryPolicy) postdate it.
    """
    schema = copy.deepcopy(json.loads(SCHEMA.read_text()))
    d = schema["definitions"]
    value = {
        "oneOf": [
            {"type": "string"},
            {"$ref": "#/definitions/GetFunction"},
            {"$ref": "#/definitions/JsonGet"},
            {"$ref": "#/definitions/JoinFunction"},
        ]
    }
    d["JoinFunction"] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["Std:Join"],
        "properties": {
            "Std:Join": {
                "type": "object",
                "additionalProperties": False,
                "required": ["Values"],
                "properties": {"On": {"type": "string"}, "Values": {"type": "array", "items": value}},
            }
        },
    }
    d["JsonGet"] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["Std:JsonGet"],
        "properties": {
            "Std:JsonGet": {
                "type": "object",
                "required": ["PropertyFile", "Path"],
                "properties": {"PropertyFile": {"$ref": "#/definitions/GetFunction"}, "Path": {"type": "string"}},
            }
        },
    }
    for kind in ("StringArgumentValue", "FloatArgumentValue", "IntegerArgumentValue"):
        d[kind] = {
            "oneOf": d[kind]["oneOf"] + [{"$ref": "#/definitions/JsonGet"}, {"$ref": "#/definitions/JoinFunction"}]
        }
    schema["properties"]["PipelineExperimentConfig"] = {"type": "object"}
    schema["properties"]["MlflowConfig"] = {"type": ["object", "null"]}

    def add_newer_fields(node: Any) -> None:
        if isinstance(node, dict):
            props = node.get("properties")
            if isinstance(props, dict):
                if "S3DataType" in props and "S3Uri" in props:
                    props["S3DataDistributionType"] = {"type": "string"}
                if "S3OutputPath" in props:
                    props["CompressionType"] = {"type": "string"}
            for child in node.values():
                add_newer_fields(child)
        elif isinstance(node, list):
            for child in node:
                add_newer_fields(child)

    add_newer_fields(schema)
    d["ProcessingStep"]["properties"]["PropertyFiles"] = {
        "type": "array",
        "items": {"type": "object", "required": ["PropertyFileName", "OutputName", "FilePath"]},
    }
    for kind in ("ProcessingStep", "TrainingStep"):
        d[kind]["properties"]["RetryPolicies"] = {"type": "array", "items": {"type": "object"}}
    return schema


@pytest.fixture(scope="module")
def definition() -> dict[str, Any]:
    return json.loads(definition_json(PipelineConfig(role_arn="arn:aws:iam::123456789012:role/genesig", bucket="b")))


def test_definition_names_its_steps_and_parameters(definition: dict[str, Any]) -> None:
    assert [s["Name"] for s in definition["Steps"]] == STEP_NAMES
    assert {p["Name"] for p in definition["Parameters"]} == PARAMETERS
    check = definition["Steps"][3]["Arguments"]
    assert [s["Name"] for s in check["IfSteps"]] == ["RegisterModel", "DeployToMme"]


def test_the_gate_is_decided_by_the_evaluation_job_and_a_miss_is_not_a_failure(definition: dict[str, Any]) -> None:
    [condition] = definition["Steps"][3]["Arguments"]["Conditions"]
    assert condition["Type"] == "Equals" and condition["RightValue"] is True
    assert condition["LeftValue"]["Std:JsonGet"]["Path"] == "gate.passed"
    evaluate = definition["Steps"][2]
    assert evaluate["PropertyFiles"][0]["FilePath"] == "evaluation.json"
    arguments = evaluate["Arguments"]["AppSpecification"]["ContainerArguments"]
    threshold = arguments[arguments.index("--threshold") + 1]
    assert threshold == {"Std:Join": {"On": "", "Values": [{"Get": "Parameters.MetricThreshold"}]}}, "as text"
    assert arguments[arguments.index("--gate-on") + 1] == {"Get": "Parameters.GateOn"}
    # The one signature's own permutation test decides with the threshold: its p at most the Fdr parameter.
    for option, name in (("--fdr", "Fdr"), ("--permutations", "Permutations")):
        value = arguments[arguments.index(option) + 1]
        assert value == {"Std:Join": {"On": "", "Values": [{"Get": f"Parameters.{name}"}]}}
    assert definition["Steps"][3]["Arguments"]["ElseSteps"] == [], "below threshold: the execution still succeeds"


def test_steps_run_our_images_and_our_step_code(definition: dict[str, Any]) -> None:
    steps = {s["Name"]: s for s in definition["Steps"]}
    steps.update({s["Name"]: s for s in steps["CheckMetric"]["Arguments"]["IfSteps"]})
    for name, step in (
        ("PreprocessCohort", "preprocess"),
        ("EvaluateModel", "evaluate"),
        ("RegisterModel", "register-sagemaker"),
        ("DeployToMme", "deploy-sagemaker"),
    ):
        app = steps[name]["Arguments"]["AppSpecification"]
        assert app["ImageUri"] == {"Get": "Parameters.TrainingImageUri"}
        assert app["ContainerEntrypoint"] == ["genesig", "step", step]
    train = steps["TrainModel"]["Arguments"]
    assert train["AlgorithmSpecification"]["TrainingImage"] == {"Get": "Parameters.TrainingImageUri"}
    assert train["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == {
        "Get": "Steps.PreprocessCohort.ProcessingOutputConfig.Outputs['prepared'].S3Output.S3Uri"
    }
    register = steps["RegisterModel"]["Arguments"]["AppSpecification"]["ContainerArguments"]
    assert {"Get": "Parameters.ServingImageUri"} in register and {"Get": "Parameters.ModelApprovalStatus"} in register
    deploy = steps["DeployToMme"]["Arguments"]["AppSpecification"]["ContainerArguments"]
    assert deploy[1]["Std:JsonGet"]["Path"] == "package_arn"


def test_every_step_retries_throttling_and_jobs_retry_capacity(definition: dict[str, Any]) -> None:
    steps = definition["Steps"][:3] + definition["Steps"][3]["Arguments"]["IfSteps"]
    for step in steps:
        kinds = {kind for policy in step["RetryPolicies"] for kind in policy["ExceptionType"]}
        assert {"Step.THROTTLING", "Step.SERVICE_FAULT", "SageMaker.CAPACITY_ERROR"} <= kinds, step["Name"]


def test_training_hyperparameters_come_from_the_typed_settings(definition: dict[str, Any]) -> None:
    from genesig.pipeline.settings import TrainSettings, as_strings

    assert definition["Steps"][1]["Arguments"]["HyperParameters"] == as_strings(TrainSettings())


def test_definition_validates_against_the_corrected_published_schema(definition: dict[str, Any]) -> None:
    errors = [deepest(e) for e in jsonschema.Draft7Validator(corrected_schema()).iter_errors(definition)]
    assert errors == []


def deepest(error: jsonschema.ValidationError) -> str:
    while error.context:
        error = max(error.context, key=lambda c: len(c.absolute_path))
    return f"{list(error.absolute_path)}: {error.message[:300]}"


@pytest.mark.parametrize(
    ("design", "steps"),
    [("signature", STEP_NAMES), ("set", ["PrepareSignatureSet", "TrainSignatures", "RegisterSignatures"])],
)
def test_cli_prints_either_definition_without_aws(tmp_path: Path, design: str, steps: list[str]) -> None:
    out = tmp_path / "definition.json"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # no AWS credentials, no region
    result = subprocess.run(
        [sys.executable, "-m", "genesig.cli", "pipeline", "definition", "--design", design, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    printed = json.loads(out.read_text())
    assert [s["Name"] for s in printed["Steps"]] == steps
    errors = [deepest(e) for e in jsonschema.Draft7Validator(corrected_schema()).iter_errors(printed)]
    assert errors == []


def test_the_set_run_deals_its_random_sets_where_it_deals_the_sizes() -> None:
    """PrepareSignatureSet spreads RandomSets over the set's sizes and writes the count per size into the shards, as
    run-local spreads them: given only to the instances, the set run drew the default's count and its competitive p
    differed from run-local's."""
    from genesig.pipeline.sagemaker.pipeline import set_definition_json

    config = PipelineConfig(role_arn="arn:aws:iam::123456789012:role/genesig", bucket="b")
    definition = json.loads(set_definition_json(config))
    prepare, train = definition["Steps"][0], definition["Steps"][1]
    arguments = prepare["Arguments"]["AppSpecification"]["ContainerArguments"]
    value = arguments[arguments.index("--random-sets") + 1]
    assert value == {"Std:Join": {"On": "", "Values": [{"Get": "Parameters.RandomSets"}]}}
    assert "random_sets" not in train["Arguments"]["HyperParameters"]
