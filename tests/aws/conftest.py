"""AWS emulators on 127.0.0.1 for the pipeline's AWS code: moto (SageMaker) and rclone's S3 server (S3).

Both start on free ports, are reached through AWS_ENDPOINT_URL_SAGEMAKER / AWS_ENDPOINT_URL_S3 (read by
boto3 itself, so production code takes no test hooks), and are stopped by process id.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.emulators import REGION, aws_env, strict_rejections  # noqa: F401  (fixtures)


@pytest.fixture
def aws(aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:  # noqa: F811
    for key, value in aws_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return {
        "sagemaker": boto3.client("sagemaker", region_name=REGION),
        "s3": boto3.client("s3", region_name=REGION),
        "env": {**os.environ, **aws_env},
        "tmp": str(tmp_path),
    }
