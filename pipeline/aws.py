"""AWS access for the pipeline side: boto3 clients whose endpoints come from configuration, so the same code
runs against SageMaker and S3 or against emulators on 127.0.0.1 (moto, an S3 server).

Endpoints: ``AWS_ENDPOINT_URL_SAGEMAKER`` / ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` (read by boto3
itself) or explicit arguments. Errors become ``GenesigError`` with a message that names the call.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from genesig.artifact import artifact_filename, read_artifact
from genesig.errors import Conflict, GenesigError, ModelNotFound

GROUP_PREFIX = "genesig"


class AwsError(GenesigError):
    status = 502
    code = "aws_error"


def client(service: str, *, region: str | None = None, endpoint_url: str | None = None) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(retries={"max_attempts": 8, "mode": "adaptive"}, connect_timeout=10, read_timeout=60)
    return boto3.client(service, region_name=region, endpoint_url=endpoint_url, config=config)


def call(what: str, fn: Any, **kwargs: Any) -> Any:
    """Run a boto3 call; turn its errors into one clear message (throttling is retried by botocore first)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return fn(**kwargs)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code, message = error.get("Code", "Unknown"), error.get("Message", "")
        missing = code in ("NoSuchBucket", "NoSuchKey", "404", "NotFound", "ResourceNotFound") or (
            code == "ValidationException" and "does not exist" in message.lower()
        )
        if missing:
            raise ModelNotFound(f"{what}: {code} {message}".strip()) from None
        raise AwsError(f"{what} failed: {code} {message}".strip()) from None
    except BotoCoreError as exc:
        raise AwsError(f"{what} failed: {exc}") from None


def split_s3(uri: str) -> tuple[str, str]:
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc:
        raise GenesigError(f"expected an s3://bucket/key URI, got {uri!r}")
    return parts.netloc, parts.path.lstrip("/")


def group_name(artifact_name: str) -> str:
    return f"{GROUP_PREFIX}-{artifact_name}"[:63]


def next_package_version(sagemaker: Any, group: str) -> int:
    """The version the next model package registered in ``group`` will get (1 when the group is new)."""
    versions = []
    token = None
    while True:
        kwargs: dict[str, Any] = {"ModelPackageGroupName": group, "MaxResults": 100}
        if token:
            kwargs["NextToken"] = token
        try:
            page = call(f"list model packages of {group}", sagemaker.list_model_packages, **kwargs)
        except ModelNotFound:
            return 1
        versions += [p.get("ModelPackageVersion", 0) for p in page.get("ModelPackageSummaryList", [])]
        token = page.get("NextToken")
        if not token:
            return max(versions, default=0) + 1


@dataclass(frozen=True)
class S3Deployment:
    package_arn: str
    key: str
    action: str


def deploy_model_package(sagemaker: Any, s3: Any, package_arn: str, prefix: str) -> S3Deployment:
    """Copy an Approved package's model.tar.gz to ``<prefix>/<name>-v<N>.tar.gz``; never overwrite, idempotent."""
    package = call(f"describe {package_arn}", sagemaker.describe_model_package, ModelPackageName=package_arn)
    status = package.get("ModelApprovalStatus")
    if status != "Approved":
        return S3Deployment(package_arn, "", f"skipped: {status}; approve it, then run `genesig sync`")
    source = package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]
    source_bucket, source_key = split_s3(source)
    body = call(f"read {source}", s3.get_object, Bucket=source_bucket, Key=source_key)["Body"].read()
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "model.tar.gz"
        archive.write_bytes(body)
        manifest = read_artifact(archive).manifest  # full verification before anything is published
    version = package.get("ModelPackageVersion")
    if version is not None and manifest.version != version:
        raise Conflict(f"{package_arn} is version {version} but its artifact says version {manifest.version}")
    bucket, key_prefix = split_s3(prefix)
    key = f"{key_prefix.rstrip('/')}/{artifact_filename(manifest.name, manifest.version)}".lstrip("/")
    digest = hashlib.sha256(body).hexdigest()
    try:
        existing = call(f"head s3://{bucket}/{key}", s3.head_object, Bucket=bucket, Key=key)
    except ModelNotFound:
        existing = None
    if existing is not None:
        recorded = existing.get("Metadata", {}).get("sha256")
        if recorded is None:  # not every S3 implementation keeps user metadata: hash the object itself
            current = call(f"read s3://{bucket}/{key}", s3.get_object, Bucket=bucket, Key=key)["Body"].read()
            recorded = hashlib.sha256(current).hexdigest()
        if recorded == digest:
            return S3Deployment(package_arn, key, "already deployed")
        raise Conflict(f"s3://{bucket}/{key} exists with different content; deployed names are never overwritten")
    # One PUT: S3 objects appear whole or not at all.
    call(
        f"write s3://{bucket}/{key}",
        s3.put_object,
        Bucket=bucket,
        Key=key,
        Body=body,
        Metadata={"sha256": digest},
        ContentType="application/gzip",
    )
    return S3Deployment(package_arn, key, "copied")
