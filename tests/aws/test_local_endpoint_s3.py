"""The local endpoint's model source reads an S3 prefix through an endpoint URL (rclone's S3 server here)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from genesig.artifact import read_artifact
from genesig.local_endpoint import ModelSource


def test_s3_prefix_fetches_artifacts_and_reports_missing_ones(
    aws: dict[str, Any], make_archive: Callable[..., Path], tmp_path: Path
) -> None:
    bucket = f"b{uuid.uuid4().hex[:12]}"
    aws["s3"].create_bucket(Bucket=bucket)
    archive = make_archive("metagene_19")
    aws["s3"].put_object(Bucket=bucket, Key="mme/metagene_19-v1.tar.gz", Body=archive.read_bytes())
    source = ModelSource(f"s3://{bucket}/mme/", aws["s3"])
    fetched = source.fetch("metagene_19-v1.tar.gz", tmp_path / "a.tar.gz")
    assert read_artifact(fetched).manifest.name == "metagene_19"
    with pytest.raises(FileNotFoundError):
        source.fetch("metagene_3-v1.tar.gz", tmp_path / "b.tar.gz")
