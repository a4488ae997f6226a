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

from genesig.pipeline.sagemaker_pipeline import PipelineConfig, definition_json

SCHEMA = Path(__file__).resolve().parents[2].parent / "shared" / "schemas" / "sagemaker-pipeline-definition.schema.json"
STEP_NAMES = ["PreprocessCohort", "TrainModel", "EvaluateModel", "CheckMetric"]
PARAMETERS = {
    "InputDataUri",
    "Signature",
    "SignatureSetUri",
    "ProcessingInstanceType",
    "TrainingInstanceType",
    "MetricThreshold",
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
    5. RegisterModel lacks ``ModelApprovalStatus``, ``SkipModelValidation`` and a container's ``Environment``.
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
    register = d["RegisterModelStep"]["properties"]["Arguments"]["properties"]
    register["ModelApprovalStatus"] = {"$ref": "#/definitions/StringArgumentValue"}
    register["SkipModelValidation"] = {"$ref": "#/definitions/StringArgumentValue"}
    container = register["InferenceSpecification"]["properties"]["Containers"]["items"]["properties"]
    container["Environment"] = {"type": "object", "additionalProperties": {"$ref": "#/definitions/StringArgumentValue"}}
    return schema


@pytest.fixture(scope="module")
def definition() -> dict[str, Any]:
    return json.loads(definition_json(PipelineConfig()))


def test_definition_names_its_steps_and_parameters(definition: dict[str, Any]) -> None:
    assert [s["Name"] for s in definition["Steps"]] == STEP_NAMES
    assert {p["Name"] for p in definition["Parameters"]} == PARAMETERS
    check = definition["Steps"][3]["Arguments"]
    assert [s["Name"] for s in check["IfSteps"]] == ["RegisterModel", "DeployToMme"]
    assert [s["Name"] for s in check["ElseSteps"]] == ["MetricBelowThreshold"]


def test_condition_reads_the_evaluation_report_against_the_threshold(definition: dict[str, Any]) -> None:
    [condition] = definition["Steps"][3]["Arguments"]["Conditions"]
    assert condition["Type"] == "GreaterThanOrEqualTo"
    assert condition["LeftValue"]["Std:JsonGet"]["Path"] == "cross_validation.mean"
    assert condition["RightValue"] == {"Get": "Parameters.MetricThreshold"}
    evaluate = definition["Steps"][2]
    assert evaluate["PropertyFiles"][0]["FilePath"] == "evaluation.json"
    fail = definition["Steps"][3]["Arguments"]["ElseSteps"][0]["Arguments"]["ErrorMessage"]["Std:Join"]["Values"]
    assert {"Get": "Parameters.MetricThreshold"} in fail and any(
        "Std:JsonGet" in v for v in fail if isinstance(v, dict)
    )


def test_steps_run_our_image_and_our_step_code(definition: dict[str, Any]) -> None:
    steps = {s["Name"]: s for s in definition["Steps"]}
    for name, step in (("PreprocessCohort", "preprocess"), ("EvaluateModel", "evaluate")):
        app = steps[name]["Arguments"]["AppSpecification"]
        assert app["ImageUri"] == {"Get": "Parameters.TrainingImageUri"}
        assert app["ContainerEntrypoint"] == ["genesig", "step", step]
    train = steps["TrainModel"]["Arguments"]
    assert train["AlgorithmSpecification"]["TrainingImage"] == {"Get": "Parameters.TrainingImageUri"}
    assert train["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == {
        "Get": "Steps.PreprocessCohort.ProcessingOutputConfig.Outputs['prepared'].S3Output.S3Uri"
    }
    register = steps["CheckMetric"]["Arguments"]["IfSteps"][0]["Arguments"]
    assert register["ModelApprovalStatus"] == {"Get": "Parameters.ModelApprovalStatus"}
    assert register["InferenceSpecification"]["Containers"][0]["Image"] == {"Get": "Parameters.ServingImageUri"}
    assert register["InferenceSpecification"]["Containers"][0]["ModelDataUrl"] == {
        "Get": "Steps.TrainModel.ModelArtifacts.S3ModelArtifacts"
    }


def test_definition_validates_against_the_corrected_published_schema(definition: dict[str, Any]) -> None:
    errors = [deepest(e) for e in jsonschema.Draft7Validator(corrected_schema()).iter_errors(definition)]
    assert errors == []


def deepest(error: jsonschema.ValidationError) -> str:
    while error.context:
        error = max(error.context, key=lambda c: len(c.absolute_path))
    return f"{list(error.absolute_path)}: {error.message[:300]}"


def test_cli_prints_the_definition_without_aws(tmp_path: Path) -> None:
    out = tmp_path / "definition.json"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # no AWS credentials, no region
    result = subprocess.run(
        [sys.executable, "-m", "genesig.cli", "pipeline", "definition", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert [s["Name"] for s in json.loads(out.read_text())["Steps"]] == STEP_NAMES
