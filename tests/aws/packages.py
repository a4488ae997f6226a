"""Model packages registered the way the pipelines register them (genesig.pipeline.sagemaker.registry)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from genesig.pipeline.sagemaker.registry import Registration, register_model
from tests.evaluations import an_evaluation

SERVING_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/genesig-mme:1"


def new_bucket(aws: dict[str, Any]) -> str:
    name = f"b{uuid.uuid4().hex[:12]}"
    aws["s3"].create_bucket(Bucket=name)
    return name


def register(aws: dict[str, Any], archive: Path, bucket: str, status: str = "Approved") -> Registration:
    return register_model(
        aws["sagemaker"],
        aws["s3"],
        artifact=archive,
        evaluation=an_evaluation(gate={"passed": True, "reason": "registered by a test", "final": True}),
        package_prefix=f"s3://{bucket}/packages/",
        serving_image=SERVING_IMAGE,
        approval_status=status,
    )
