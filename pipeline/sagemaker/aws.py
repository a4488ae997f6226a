"""AWS access for the pipeline side: boto3 clients whose endpoints come from configuration, so the same code runs
against SageMaker and S3 or against emulators on 127.0.0.1 (moto, an S3 server), and one place that turns AWS
errors into ours.

Endpoints: ``AWS_ENDPOINT_URL_SAGEMAKER`` / ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` (read by boto3 itself) or
explicit arguments. Errors keep their AWS error code (:class:`AwsError`); only "not found" means absent
(:class:`AwsNotFound`); missing set-up (region, credentials, the ``aws`` extra) is one line naming the fix.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

from genesig.errors import GenesigError, ModelNotFound

# botocore's adaptive mode: retries with backoff, and slows the client down when AWS throttles it.
RETRIES = {"max_attempts": 10, "mode": "adaptive"}
NOT_FOUND_CODES = frozenset({"NoSuchBucket", "NoSuchKey", "404", "NotFound", "ResourceNotFound"})
THROTTLING_CODES = frozenset({"ThrottlingException", "Throttling", "TooManyRequestsException", "SlowDown"})
DENIED_CODES = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "Forbidden", "403"})


class AwsError(GenesigError):
    """An AWS call failed; ``code`` is AWS's error code (e.g. ``ThrottlingException``), ``what`` the call."""

    status = 502
    code = "aws_error"

    def __init__(self, message: str, *, aws_code: str = "", what: str = "") -> None:
        super().__init__(message)
        self.aws_code = aws_code
        self.what = what


class AwsNotFound(ModelNotFound):
    """What was asked for does not exist (a bucket, an object, a model package, an endpoint)."""

    def __init__(self, message: str, *, aws_code: str = "", what: str = "") -> None:
        super().__init__(message)
        self.aws_code = aws_code
        self.what = what


class AwsSetupError(GenesigError):
    """Something to set up before any AWS call can work (region, credentials, the aws extra)."""

    status = 400
    code = "aws_setup"


def _boto3() -> Any:
    try:
        import boto3
    except ImportError:
        raise AwsSetupError(
            "the AWS commands need boto3: install the aws extra (pip install 'genesig-mme[aws]', or "
            "scripts/bootstrap.sh dev)"
        ) from None
    return boto3


def client(service: str, *, region: str | None = None, endpoint_url: str | None = None) -> Any:
    """A boto3 client with adaptive retries; no region anywhere is one clear line."""
    from botocore.config import Config
    from botocore.exceptions import NoRegionError

    # Enough connections for the thread pools that upload, download and register many objects at once.
    config = Config(retries=RETRIES, connect_timeout=10, read_timeout=60, max_pool_connections=32)  # type: ignore[arg-type]
    try:
        return _boto3().client(service, region_name=region, endpoint_url=endpoint_url, config=config)
    except NoRegionError:
        raise AwsSetupError("no AWS region: pass --region, set AWS_DEFAULT_REGION, or run `aws configure`") from None


def is_not_found(code: str, message: str) -> bool:
    """SageMaker answers most describe calls on something missing with a ValidationException that says so."""
    lowered = message.lower()
    return code in NOT_FOUND_CODES or (
        code == "ValidationException" and ("does not exist" in lowered or "could not find" in lowered)
    )


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    """AWS's exceptions inside as our typed errors: ClientError by its code, missing set-up as one line."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError
    from botocore.exceptions import ConnectionError as AwsConnectionError

    try:
        yield
    except ClientError as exc:
        raise error_of(what, exc) from None
    except NoCredentialsError:
        raise AwsSetupError(
            f"{what}: no AWS credentials; run `aws configure`, set AWS_PROFILE, or use an instance role"
        ) from None
    except NoRegionError:
        raise AwsSetupError(f"{what}: no AWS region; pass --region or set AWS_DEFAULT_REGION") from None
    except AwsConnectionError as exc:
        where = exc.kwargs.get("endpoint_url", "the endpoint")
        raise AwsError(
            f"{what}: could not connect to {where}; check the endpoint URL (the --*-endpoint-url options or"
            " AWS_ENDPOINT_URL_*), that the service there is running, and the network",
            what=what,
        ) from None
    except BotoCoreError as exc:
        raise AwsError(f"{what} failed: {exc}", what=what) from None


def call(what: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
    """Run one boto3 call (botocore has retried throttling by then); its failure becomes one of our typed errors."""
    with translated(what):
        return fn(**kwargs)


def error_of(what: str, exc: Any) -> GenesigError:
    """A ClientError as our error: its code kept, a message that says what to do."""
    error = exc.response.get("Error", {})
    code, message = str(error.get("Code", "Unknown")), str(error.get("Message", ""))
    if is_not_found(code, message):
        return AwsNotFound(f"{what}: {code} {message}".strip(), aws_code=code, what=what)
    if code in DENIED_CODES:
        return AwsError(
            f"{what}: access denied ({code}); the credentials in use may not do this: grant it in their IAM policy"
            f"{' — ' + message if message else ''}",
            aws_code=code,
            what=what,
        )
    if code in THROTTLING_CODES:
        return AwsError(
            f"{what}: AWS kept throttling after {RETRIES['max_attempts']} attempts ({code}); retry later or lower the"
            " concurrency",
            aws_code=code,
            what=what,
        )
    return AwsError(f"{what} failed: {code} {message}".strip(), aws_code=code, what=what)


def paginate(what: str, client_: Any, operation: str, key: str, **kwargs: Any) -> Iterator[Any]:
    """Every item of a List* call, across all its pages (botocore's paginator), errors typed as :func:`call`'s."""
    with translated(what):
        for page in client_.get_paginator(operation).paginate(**kwargs):
            yield from page.get(key, [])


def split_s3(uri: str) -> tuple[str, str]:
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc:
        raise GenesigError(f"expected an s3://bucket/key URI, got {uri!r}")
    return parts.netloc, parts.path.lstrip("/")


def s3_join(prefix: str, *parts: str) -> str:
    """``s3://bucket/prefix/`` joined with key parts, one ``/`` between each."""
    return "/".join([prefix.rstrip("/"), *(p.strip("/") for p in parts)])


def head_object(s3: Any, uri: str) -> dict[str, Any] | None:
    """The object's metadata, or None when it does not exist (only "not found" means absent)."""
    bucket, key = split_s3(uri)
    try:
        return dict(call(f"look up {uri}", s3.head_object, Bucket=bucket, Key=key))
    except AwsNotFound:
        return None


def user_metadata(head: dict[str, Any], key: str) -> str | None:
    """One user metadata value of a HeadObject answer; the key's case varies between S3 implementations."""
    return next((v for k, v in head.get("Metadata", {}).items() if k.lower() == key.lower()), None)


def read_object(s3: Any, uri: str) -> bytes:
    bucket, key = split_s3(uri)
    return bytes(call(f"read {uri}", s3.get_object, Bucket=bucket, Key=key)["Body"].read())


def write_object(s3: Any, uri: str, body: bytes, *, metadata: dict[str, str] | None = None) -> None:
    """One PUT: S3 shows an object whole or not at all."""
    bucket, key = split_s3(uri)
    call(
        f"write {uri}",
        s3.put_object,
        Bucket=bucket,
        Key=key,
        Body=body,
        Metadata=metadata or {},
        ContentType="application/gzip" if key.endswith(".tar.gz") else "application/json",
    )
