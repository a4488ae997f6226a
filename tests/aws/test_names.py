"""AWS names from one place: valid under botocore's service model, distinct and stable; the strict layer refuses
the rest."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from genesig.pipeline.sagemaker.names import description, entity_name, names_for
from genesig.pipeline.signatures import read_signatures
from tests.strict_aws import ServiceModelValidator

GO = Path(__file__).resolve().parents[3] / "shared" / "data" / "go-biological-process-2021.gmt"
HALLMARK = GO.with_name("msigdb-hallmark-v7.0.gmt")
WHEN = datetime(2026, 11, 29, 18, 0, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def validator() -> ServiceModelValidator:
    return ServiceModelValidator("sagemaker")


@pytest.mark.parametrize("gmt", [GO, HALLMARK], ids=["go-6036", "hallmark-50"])
def test_every_signature_maps_to_names_aws_accepts_all_distinct(gmt: Path, validator: ServiceModelValidator) -> None:
    signatures = read_signatures(gmt)
    names = [names_for(s.name) for s in signatures]
    for n in names:
        group = {"ModelPackageGroupName": n.group, "ModelPackageGroupDescription": n.group_description()}
        assert validator.validate("CreateModelPackageGroup", group) == [], n
        start = {"PipelineName": "genesig-mme", "PipelineExecutionDisplayName": n.execution_display_name(WHEN)}
        assert validator.validate("StartPipelineExecution", start) == [], n
        package = {"ModelPackageGroupName": n.group, "ModelPackageDescription": description(n.signature)}
        assert validator.validate("CreateModelPackage", package) == [], n
    assert len({n.group for n in names}) == len(names), "group names are distinct"
    assert len({n.artifact for n in names}) == len(names), "artifact names are distinct"
    assert len({n.execution_display_name(WHEN) for n in names}) == len(names)
    if gmt == GO:
        assert len(signatures) == 6036


def test_names_are_stable_and_kept_when_already_valid() -> None:
    assert names_for("metagene-19").group == "genesig-metagene-19", "a valid short name is kept as it is"
    assert names_for("metagene_19").group == names_for("metagene_19").group
    changed = names_for("metagene_19").group
    assert changed.startswith("genesig-metagene-19-") and len(changed) == len("genesig-metagene-19-") + 8


def test_a_cut_name_keeps_its_hash_so_long_names_stay_distinct() -> None:
    a, b = ("x" * 200 + " alpha"), ("x" * 200 + " beta")
    assert entity_name(a, 63) != entity_name(b, 63)
    assert len(entity_name(a, 63)) == 63


def test_the_strict_layer_refuses_what_aws_would(
    aws: dict[str, Any], strict_rejections: Callable[[], list[str]]
) -> None:
    with pytest.raises(ClientError) as raised:
        aws["sagemaker"].create_model_package_group(ModelPackageGroupName="genesig-metagene_19")
    error = raised.value.response["Error"]
    assert error["Code"] == "ValidationException"
    assert "Value 'genesig-metagene_19' at 'modelPackageGroupName' failed to satisfy constraint" in error["Message"]
    [refused] = strict_rejections()
    assert "regular expression pattern" in refused
    aws["sagemaker"].create_model_package_group(ModelPackageGroupName=names_for("metagene_19").group)


def test_what_the_user_gives_is_checked_against_aws_patterns_before_any_call(validator: ServiceModelValidator) -> None:
    from genesig.errors import DataError
    from genesig.pipeline.sagemaker.names import check_bucket, check_image_uri, check_role_arn

    role = "arn:aws:iam::123456789012:role/genesig-sagemaker"
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/genesig-mme:v1"
    assert check_role_arn("--role", role) == role
    assert check_image_uri("--image-uri", image) == image
    assert check_bucket("--bucket", "genesig-123456789012-us-east-1")
    # What passes our checks passes AWS's.
    model = {"ModelName": "m", "ExecutionRoleArn": role, "PrimaryContainer": {"Image": image}}
    assert validator.validate("CreateModel", model) == []
    # A line of `docker login` output read as an image URI (the walkthrough's first run found this), an s3:// URI
    # as a bucket, a user ARN as a role: each refused naming the flag.
    with pytest.raises(DataError, match="--serving-image-uri 'Login Succeeded' is not an image URI"):
        check_image_uri("--serving-image-uri", "Login Succeeded")
    with pytest.raises(DataError, match="not an s3:// URI"):
        check_bucket("--bucket", "s3://genesig-data")
    with pytest.raises(DataError, match="is not an IAM role ARN"):
        check_role_arn("--role", "arn:aws:iam::123456789012:user/alice")
    with pytest.raises(DataError, match="is not an image URI"):
        check_image_uri("--image-uri", "x" * 260 + ":v1")
