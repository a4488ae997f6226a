"""AWS emulators on 127.0.0.1: moto (SageMaker) behind the strict layer (tests/strict_aws.py: what AWS would refuse
is refused) and rclone's S3 server (S3), started on free ports and stopped by process id. Reached through
AWS_ENDPOINT_URL_SAGEMAKER / AWS_ENDPOINT_URL_S3, which boto3 reads itself, so production code takes no test hooks.
Shared by the AWS tests and the image tests (containers on the host network).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from genesig.server_process import free_port
from tests.strict_aws import StrictProxy

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


# The strict layer of the running session, for the tests that look at what it refused.
STRICT: list[StrictProxy] = []


@contextlib.contextmanager
def strict_moto(log: Path | None = None) -> Iterator[tuple[str, StrictProxy]]:
    """A moto server of its own behind a strict layer: its URL (the layer's) and the layer."""
    port = free_port()
    with open(log or os.devnull, "wb") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    strict = StrictProxy(port)
    try:
        _wait(f"http://127.0.0.1:{port}/moto-api/", proc)
        yield f"http://127.0.0.1:{strict.start()}", strict
        refused = [f"{r.operation}: {r.message}" for r in strict.rejections]
        assert not refused, f"requests AWS would refuse: {refused[:5]}"
    finally:
        strict.stop()
        _stop(proc)


@pytest.fixture(scope="session")
def aws_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Credentials, region and endpoint URLs of the emulators. At the end, every request AWS would have refused must
    have been expected by its test (``strict_rejections``), so no test passes on a request AWS would refuse."""
    bin_dir = Path(sys.executable).parent
    s3_port = free_port()
    logs = tmp_path_factory.mktemp("emulators")
    with open(logs / "rclone.log", "wb") as s3_log:
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
        _wait(f"http://127.0.0.1:{s3_port}/", s3)
        with strict_moto(logs / "moto.log") as (sagemaker_url, strict):
            STRICT.append(strict)
            try:
                yield {
                    "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                    "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                    "AWS_DEFAULT_REGION": REGION,
                    "AWS_ENDPOINT_URL_SAGEMAKER": sagemaker_url,
                    "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{s3_port}",
                    # The other services the README's walkthrough calls, moto itself (the strict layer is SageMaker's).
                    **{
                        f"AWS_ENDPOINT_URL_{service}": f"http://127.0.0.1:{strict.upstream_port}"
                        for service in ("IAM", "STS", "ECR")
                    },
                }
            finally:
                STRICT.remove(strict)
    finally:
        _stop(s3)


@pytest.fixture
def strict_rejections(aws_env: dict[str, str]) -> Callable[[], list[str]]:
    """``take()``: what the strict layer refused since this test began, taken so that the session does not fail."""
    [strict] = STRICT
    before = len(strict.rejections)

    def take() -> list[str]:
        taken = [r.message for r in strict.rejections[before:]]
        del strict.rejections[before:]
        return taken

    return take
