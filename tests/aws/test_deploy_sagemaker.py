"""DeployToMme against emulators: only Approved packages, immutable versioned names, idempotent, clear errors."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from genesig.errors import Conflict, ModelNotFound
from genesig.pipeline import aws as pipeline_aws


def bucket(aws: dict[str, Any]) -> str:
    name = f"b{uuid.uuid4().hex[:12]}"
    aws["s3"].create_bucket(Bucket=name)
    return name


def register(aws: dict[str, Any], archive: Path, bucket_name: str, status: str = "Approved") -> str:
    sm = aws["sagemaker"]
    group = f"genesig-{uuid.uuid4().hex[:8]}"
    sm.create_model_package_group(ModelPackageGroupName=group)
    key = f"models/{uuid.uuid4().hex[:8]}/model.tar.gz"
    aws["s3"].put_object(Bucket=bucket_name, Key=key, Body=archive.read_bytes())
    return sm.create_model_package(
        ModelPackageGroupName=group,
        ModelApprovalStatus=status,
        InferenceSpecification={
            "Containers": [
                {
                    "Image": "123.dkr.ecr.us-east-1.amazonaws.com/genesig-mme:1",
                    "ModelDataUrl": f"s3://{bucket_name}/{key}",
                }
            ],
            "SupportedContentTypes": ["application/json"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
    )["ModelPackageArn"]


def test_approved_package_is_copied_once_under_its_versioned_name(
    aws: dict[str, Any], make_archive: Callable[..., Path]
) -> None:
    name = bucket(aws)
    arn = register(aws, make_archive("metagene_19"), name)
    first = pipeline_aws.deploy_model_package(aws["sagemaker"], aws["s3"], arn, f"s3://{name}/mme/")
    assert (first.key, first.action) == ("mme/metagene_19-v1.tar.gz", "copied")
    again = pipeline_aws.deploy_model_package(aws["sagemaker"], aws["s3"], arn, f"s3://{name}/mme/")
    assert again.action == "already deployed"
    keys = [o["Key"] for o in aws["s3"].list_objects_v2(Bucket=name, Prefix="mme/")["Contents"]]
    assert keys == ["mme/metagene_19-v1.tar.gz"]


def test_unapproved_packages_are_not_deployed(aws: dict[str, Any], make_archive: Callable[..., Path]) -> None:
    name = bucket(aws)
    archive = make_archive("metagene_19")
    for status in ("PendingManualApproval", "Rejected"):
        arn = register(aws, archive, name, status)
        result = pipeline_aws.deploy_model_package(aws["sagemaker"], aws["s3"], arn, f"s3://{name}/mme/")
        assert result.action.startswith(f"skipped: {status}")
    assert "Contents" not in aws["s3"].list_objects_v2(Bucket=name, Prefix="mme/")


def test_an_existing_name_is_never_overwritten(aws: dict[str, Any], make_archive: Callable[..., Path]) -> None:
    name = bucket(aws)
    arn = register(aws, make_archive("metagene_19"), name)
    aws["s3"].put_object(Bucket=name, Key="mme/metagene_19-v1.tar.gz", Body=b"someone else's model")
    with pytest.raises(Conflict, match="never overwritten"):
        pipeline_aws.deploy_model_package(aws["sagemaker"], aws["s3"], arn, f"s3://{name}/mme/")
    body = aws["s3"].get_object(Bucket=name, Key="mme/metagene_19-v1.tar.gz")["Body"].read()
    assert body == b"someone else's model"


def test_missing_bucket_is_a_clear_error(aws: dict[str, Any], make_archive: Callable[..., Path]) -> None:
    name = bucket(aws)
    arn = register(aws, make_archive("metagene_19"), name)
    with pytest.raises(ModelNotFound, match="no-such-bucket"):
        pipeline_aws.deploy_model_package(aws["sagemaker"], aws["s3"], arn, "s3://no-such-bucket/mme/")


def test_next_version_follows_the_registry(aws: dict[str, Any], make_archive: Callable[..., Path]) -> None:
    sm = aws["sagemaker"]
    assert pipeline_aws.next_package_version(sm, "genesig-never-created") == 1
    name = bucket(aws)
    arn = register(aws, make_archive("metagene_3"), name)
    group = sm.describe_model_package(ModelPackageName=arn)["ModelPackageGroupName"]
    assert pipeline_aws.next_package_version(sm, group) == 2
