"""A local endpoint as a child process (the demo, the tests, the benchmarks), and a boto3 client aimed at one."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from genesig.client import ModelServerClient
from genesig.errors import GenesigError
from genesig.server_process import free_port


def runtime_client(url: str) -> Any:
    """A boto3 SageMaker Runtime client aimed at a local endpoint (dummy credentials, no retries)."""
    import boto3  # the pipeline extra: only for callers that speak boto3
    from botocore.config import Config

    return boto3.client(
        "sagemaker-runtime",
        region_name="us-east-1",
        endpoint_url=url,
        aws_access_key_id="local",
        aws_secret_access_key="local",
        config=Config(retries={"max_attempts": 1}),
    )


def start_local_endpoint(
    prefix: Path,
    model_server_url: str | None,
    workdir: Path,
    cache_max_mb: int = 2048,
    timeout_s: float = 60,
    cache_dir: Path | None = None,
    model_url_root: str | None = None,
    image: str | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """``genesig local-endpoint`` as a child process on a free loopback port, in front of ``model_server_url`` or
    of the serving ``image`` it starts under Docker; returns the process and its URL once healthy."""

    port = free_port()
    log_path = workdir / f"local-endpoint-{port}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "genesig.cli",
                "local-endpoint",
                "--prefix",
                str(prefix),
                "--port",
                str(port),
                *(["--model-server-url", model_server_url] if model_server_url else []),
                *(["--image", image] if image else []),
                "--cache-dir",
                str(cache_dir or workdir / f"cache-{port}"),
                "--cache-max-mb",
                str(cache_max_mb),
                *(["--model-url-root", model_url_root] if model_url_root else []),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    with ModelServerClient(url, timeout=5) as client:
        deadline = time.monotonic() + timeout_s
        while not client.ping():
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise GenesigError(f"the local endpoint did not start; see {log_path}")
            time.sleep(0.2)
    return proc, url
