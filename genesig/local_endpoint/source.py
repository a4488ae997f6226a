"""Where a local endpoint's artifacts live: a folder (run-local's MME prefix) or ``s3://bucket/prefix/``."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from genesig.errors import DataError


class ModelSource:
    """The model prefix: a local folder of ``.tar.gz`` artifacts, or ``s3://bucket/prefix/``."""

    def __init__(self, prefix: str, s3_client: Any = None) -> None:
        self.prefix = prefix
        self.s3 = s3_client
        if prefix.startswith("s3://") and s3_client is None:
            from genesig.pipeline.sagemaker.aws import client  # boto3: only for an S3 prefix

            self.s3 = client("s3")
        elif not prefix.startswith("s3://") and not Path(prefix).is_dir():
            raise DataError(f"--prefix {prefix}: no such folder (the model prefix: a folder of .tar.gz, or s3://...)")

    def fetch(self, target: str, into: Path) -> Path:
        """Copy the artifact to ``into``; raise ``FileNotFoundError`` when the prefix has no such object."""
        if self.prefix.startswith("s3://"):
            from genesig.pipeline.sagemaker.aws import AwsNotFound, read_object, s3_join

            try:
                into.write_bytes(read_object(self.s3, s3_join(self.prefix, target)))
            except AwsNotFound:
                raise FileNotFoundError(target) from None
            return into
        source = Path(self.prefix) / target
        if not source.is_file():
            raise FileNotFoundError(target)
        shutil.copyfile(source, into)
        return into
