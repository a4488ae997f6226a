"""AWS emulators on 127.0.0.1: moto (SageMaker) and rclone's S3 server (S3), started on free ports and stopped by
process id. Reached through AWS_ENDPOINT_URL_SAGEMAKER / AWS_ENDPOINT_URL_S3, which boto3 reads itself, so
production code takes no test hooks. Shared by the AWS tests and the image tests (containers on the host network).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from genesig.server_process import free_port

ACCESS_KEY, SECRET_KEY, REGION = "genesig-test", "genesig-test-secret", "us-east-1"


def _wait(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"emulator exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout_s} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def aws_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    bin_dir = Path(sys.executable).parent
    moto_port, s3_port = free_port(), free_port()
    logs = tmp_path_factory.mktemp("emulators")
    with open(logs / "moto.log", "wb") as moto_log, open(logs / "rclone.log", "wb") as s3_log:
        moto = subprocess.Popen(
            [str(bin_dir / "moto_server"), "-H", "127.0.0.1", "-p", str(moto_port)],
            stdout=moto_log,
            stderr=subprocess.STDOUT,
        )
        s3 = subprocess.Popen(
            [
                str(bin_dir / "rclone"),
                "serve",
                "s3",
                "--addr",
                f"127.0.0.1:{s3_port}",
                "--auth-key",
                f"{ACCESS_KEY},{SECRET_KEY}",
                "--config",
                "/dev/null",
                str(tmp_path_factory.mktemp("s3")),
            ],
            stdout=s3_log,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait(f"http://127.0.0.1:{moto_port}/moto-api/", moto)
        _wait(f"http://127.0.0.1:{s3_port}/", s3)
        env = {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL_SAGEMAKER": f"http://127.0.0.1:{moto_port}",
            "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{s3_port}",
        }
        yield env
    finally:
        _stop(moto)
        _stop(s3)
