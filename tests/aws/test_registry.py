"""The SageMaker Model Registry side against moto and rclone's S3 server (behind the strict layer): registration
that never races for a version, approval, resolution of TargetModels, deploy into the MME prefix and sync."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from genesig.artifact import read_artifact
from genesig.errors import Conflict, ModelNotFound
from genesig.pipeline.sagemaker import registry
from genesig.pipeline.sagemaker.aws import AwsNotFound, read_object
from genesig.pipeline.sagemaker.names import names_for

from .packages import SERVING_IMAGE, new_bucket, register


def signature() -> str:
    return f"sig_{uuid.uuid4().hex[:6]}"


def test_registration_assigns_versions_and_skips_an_unchanged_model(
    aws: dict[str, Any], make_archive: Callable[..., Path]
) -> None:
    bucket, name = new_bucket(aws), signature()
    first = register(aws, make_archive(name, seed=1), bucket, "PendingManualApproval")
    assert (first.group, first.version, first.created) == (names_for(name).group, 1, True)
    again = register(aws, make_archive(name, version=3, seed=1), bucket)
    assert (again.version, again.created) == (1, False), "the same model is not registered twice"
    second = register(aws, make_archive(name, version=2, seed=2), bucket)
    assert (second.version, second.created, second.artifact_file) == (2, True, f"{name}-v2.tar.gz")
    package = registry.describe(aws["sagemaker"], second.package_arn)
    stored = read_object(aws["s3"], package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"])
    archive = Path(aws["tmp"]) / "stored.tar.gz"
    archive.write_bytes(stored)
    assert read_artifact(archive).manifest.version == 2, "the artifact was renumbered to the package's version"
    assert package["CustomerMetadataProperties"]["genesig:artifact-file"] == f"{name}-v2.tar.gz"
    assert package["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"].endswith("evaluation.json")
    assert package["InferenceSpecification"]["Containers"][0]["Image"] == SERVING_IMAGE


class ConcurrentRun:
    """A second run that registers the same signature between our look at the group and our create call."""

    def __init__(self, sm: Any, interloper: Callable[[], None]) -> None:
        self.sm, self.interloper, self.fired = sm, interloper, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sm, name)

    def create_model_package(self, **kwargs: Any) -> Any:
        if not self.fired:
            self.fired = True
            self.interloper()
        return self.sm.create_model_package(**kwargs)


def test_two_runs_never_race_for_a_version(aws: dict[str, Any], make_archive: Callable[..., Path]) -> None:
    bucket, name = new_bucket(aws), signature()
    register(aws, make_archive(name, seed=1), bucket)

    def other_run() -> None:
        register(aws, make_archive(name, version=2, seed=7), bucket)  # takes version 2

    racing = {**aws, "sagemaker": ConcurrentRun(aws["sagemaker"], other_run)}
    ours = register(racing, make_archive(name, version=3, seed=8), bucket)
    assert ours.version == 3 and ours.artifact_file == f"{name}-v3.tar.gz"
    package = registry.describe(aws["sagemaker"], ours.package_arn)
    archive = Path(aws["tmp"]) / "raced.tar.gz"
    archive.write_bytes(read_object(aws["s3"], package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]))
    assert read_artifact(archive).manifest.version == 3, "the artifact says the version its package got"
    assert package["CustomerMetadataProperties"]["genesig:artifact-file"] == f"{name}-v3.tar.gz"
    versions = [p["ModelPackageVersion"] for p in registry.packages(aws["sagemaker"], ours.group)]
    assert versions == [1, 2, 3]


def test_approval_resolution_and_deploy(aws: dict[str, Any], make_archive: Callable[..., Path]) -> None:
    sm, s3 = aws["sagemaker"], aws["s3"]
    bucket, name = new_bucket(aws), signature()
    with pytest.raises(ModelNotFound, match="has no Approved model package"):
        registry.resolve_target_model(sm, name)
    first = register(aws, make_archive(name, seed=1), bucket, "PendingManualApproval")
    skipped = registry.deploy_package(sm, s3, first.package_arn, f"s3://{bucket}/mme/")
    assert skipped.action == "skipped" and "PendingManualApproval" in skipped.reason
    registry.set_approval(sm, registry.group_of(name), 1, "Approved", "reviewed")
    assert registry.resolve_target_model(sm, name) == f"{name}-v1.tar.gz"
    deployed = registry.deploy_package(sm, s3, first.package_arn, f"s3://{bucket}/mme/")
    assert (deployed.action, deployed.name) == ("deployed", f"mme/{name}-v1.tar.gz")
    assert registry.deploy_package(sm, s3, first.package_arn, f"s3://{bucket}/mme/").action == "already there"


def test_deploy_never_overwrites_a_name_and_names_a_missing_bucket(
    aws: dict[str, Any], make_archive: Callable[..., Path]
) -> None:
    sm, s3 = aws["sagemaker"], aws["s3"]
    bucket, name = new_bucket(aws), signature()
    arn = register(aws, make_archive(name), bucket).package_arn
    s3.put_object(Bucket=bucket, Key=f"mme/{name}-v1.tar.gz", Body=b"someone else's model")
    with pytest.raises(Conflict, match="never overwritten"):
        registry.deploy_package(sm, s3, arn, f"s3://{bucket}/mme/")
    assert s3.get_object(Bucket=bucket, Key=f"mme/{name}-v1.tar.gz")["Body"].read() == b"someone else's model"
    with pytest.raises(AwsNotFound, match="no-such-bucket"):
        registry.deploy_package(sm, s3, arn, "s3://no-such-bucket/mme/")


class CountingS3:
    """Counts downloads of the objects of some signatures (the session's other tests' groups sync too)."""

    def __init__(self, s3: Any, names: list[str]) -> None:
        self.s3, self.names, self.downloads = s3, names, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.s3, name)

    def get_object(self, **kwargs: Any) -> Any:
        key = kwargs["Key"]
        self.downloads += any(names_for(n).group in key or n in key for n in self.names)
        return self.s3.get_object(**kwargs)


def test_sync_in_parallel_checks_before_downloading_and_reports_each_signature(
    aws: dict[str, Any], make_archive: Callable[..., Path]
) -> None:
    bucket = new_bucket(aws)
    names = [signature() for _ in range(5)]
    for i, name in enumerate(names):
        register(aws, make_archive(name, seed=i), bucket)
    prefix = f"s3://{bucket}/mme/"
    mine = {names_for(n).group for n in names}
    first = [d for d in registry.sync(aws["sagemaker"], aws["s3"], prefix, workers=3) if d.group in mine]
    assert sorted(d.action for d in first) == ["deployed"] * 5
    counting = CountingS3(aws["s3"], names)
    again = [d for d in registry.sync(aws["sagemaker"], counting, prefix, workers=3) if d.group in mine]
    assert sorted(d.action for d in again) == ["already there"] * 5
    assert counting.downloads == 0, "an object already there is recognised from its metadata, not downloaded"


def test_sync_goes_on_past_a_failing_signature_and_the_command_exits_non_zero(
    aws: dict[str, Any], make_archive: Callable[..., Path]
) -> None:
    bucket = new_bucket(aws)
    good, bad = signature(), signature()
    register(aws, make_archive(good), bucket)
    register(aws, make_archive(bad), bucket)
    aws["s3"].put_object(Bucket=bucket, Key=f"mme/{bad}-v1.tar.gz", Body=b"a different model under its name")
    result = subprocess.run(
        [sys.executable, "-m", "genesig.cli", "sync", "--prefix", f"s3://{bucket}/mme/"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**aws["env"], "COLUMNS": "250"},
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert aws["s3"].head_object(Bucket=bucket, Key=f"mme/{good}-v1.tar.gz"), "the good one was deployed"
    assert "failed" in result.stdout and "never overwritten" in result.stdout


def test_registry_commands_against_sagemaker(aws: dict[str, Any], make_archive: Callable[..., Path]) -> None:
    bucket, name = new_bucket(aws), signature()
    register(aws, make_archive(name), bucket, "PendingManualApproval")

    def genesig(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "genesig.cli", "registry", *args, "--aws"],
            capture_output=True,
            text=True,
            timeout=120,
            env={**aws["env"], "COLUMNS": "250"},
        )

    listed = genesig("list", "--group", name)
    assert listed.returncode == 0 and "PendingManualApproval" in listed.stdout
    approved = genesig("approve", name, "1", "--reason", "reviewed by the tumour board")
    assert approved.returncode == 0, approved.stderr
    assert registry.resolve_target_model(aws["sagemaker"], name) == f"{name}-v1.tar.gz"
    described = genesig("describe", names_for(name).group, "1")
    assert described.returncode == 0 and json.loads(described.stdout)["ModelApprovalStatus"] == "Approved"
    missing = genesig("approve", name, "7")
    assert missing.returncode == 2 and f"{names_for(name).group} has no version 7" in missing.stderr
