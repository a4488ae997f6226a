"""AWS commands end in one line that names the problem and the fix, never a traceback; AWS errors stay typed."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from genesig.pipeline.sagemaker.aws import AwsError, AwsNotFound, call

ROLE = "arn:aws:iam::123456789012:role/genesig-sagemaker"


def genesig(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "genesig.cli", *args], capture_output=True, text=True, timeout=180, env=env, cwd=cwd
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if " ERROR " in line]
    assert len(lines) == 1, result.stderr
    return lines[0]


def bare_env(tmp_path: Path) -> dict[str, str]:
    """No region, no credentials, no AWS configuration files."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@pytest.mark.parametrize(
    "command",
    [
        ("pipeline", "status"),
        ("registry", "list", "--aws"),
        ("sync", "--prefix", "s3://bucket/mme/"),
        (
            "pipeline",
            "upsert",
            "--role",
            ROLE,
            "--bucket",
            "genesig-bucket",
            "--training-image-uri",
            "t",
            "--serving-image-uri",
            "s",
        ),
    ],
)
def test_no_region_is_one_line(command: tuple[str, ...], tmp_path: Path) -> None:
    assert "no AWS region" in one_line(genesig(*command, env=bare_env(tmp_path)))


@pytest.mark.parametrize("command", [("registry", "list", "--aws"), ("pipeline", "status")])
def test_no_credentials_is_one_line_and_nothing_else(command: tuple[str, ...], tmp_path: Path) -> None:
    env = {**bare_env(tmp_path), "AWS_DEFAULT_REGION": "eu-west-1", "AWS_ENDPOINT_URL_SAGEMAKER": "http://127.0.0.1:9"}
    result = genesig(*command, env=env)
    assert "no AWS credentials" in one_line(result)
    assert result.stdout.strip() == ""  # no empty table before the error


def test_upsert_refuses_placeholders(tmp_path: Path) -> None:
    env = {**bare_env(tmp_path), "AWS_DEFAULT_REGION": "eu-west-1"}
    line = one_line(genesig("pipeline", "upsert", env=env))
    assert "--role and --bucket required" in line


def test_the_pipeline_extra_missing_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "blocked" / "sagemaker"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError(\"No module named 'sagemaker'\")\n")
    env = {**bare_env(tmp_path), "PYTHONPATH": str(blocker.parent)}
    line = one_line(genesig("pipeline", "definition", env=env))
    assert "`pipeline` set-up" in line and "scripts/bootstrap.sh pipeline" in line


def test_a_missing_bucket_is_one_line(aws: dict[str, Any]) -> None:
    line = one_line(
        genesig(
            "pipeline",
            "upsert",
            "--role",
            ROLE,
            "--bucket",
            "no-such-bucket-here",
            "--training-image-uri",
            "t:1",
            "--serving-image-uri",
            "s:1",
            env=aws["env"],
        )
    )
    assert "no-such-bucket-here" in line and "NoSuchBucket" in line


class Denied(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"__type": "AccessDeniedException", "message": "User is not authorized"}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def denying_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Denied)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_access_denied_is_one_line_naming_the_fix(tmp_path: Path, denying_url: str) -> None:
    env = {
        **bare_env(tmp_path),
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "a",
        "AWS_SECRET_ACCESS_KEY": "b",
    }
    line = one_line(genesig("registry", "list", "--aws", "--sagemaker-endpoint-url", denying_url, env=env))
    assert "access denied (AccessDeniedException)" in line and "IAM policy" in line


def test_nothing_listening_at_the_endpoint_url_is_one_line_naming_what_to_check(tmp_path: Path) -> None:
    from genesig.server_process import free_port

    env = {
        **bare_env(tmp_path),
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "a",
        "AWS_SECRET_ACCESS_KEY": "b",
    }
    (tmp_path / "patients.csv").write_text("GENE_A,GENE_B\n1,2\n")
    url = f"http://127.0.0.1:{free_port()}"
    line = one_line(
        genesig(
            *("predict", "--target-model", "m-v1.tar.gz", "--input", str(tmp_path / "patients.csv")),
            *("--endpoint", "genesig-mme", "--url", url),
            env=env,
        )
    )
    assert f"could not connect to {url}/" in line and "check the endpoint URL" in line, line


def test_errors_keep_their_code_and_only_not_found_means_absent() -> None:
    def raising(code: str, message: str = "") -> Any:
        def fn(**_kwargs: Any) -> None:
            raise ClientError({"Error": {"Code": code, "Message": message}}, "DescribeEndpoint")

        return fn

    with pytest.raises(AwsNotFound) as missing:
        call("describe endpoint x", raising("ValidationException", "Could not find endpoint x."))
    assert missing.value.aws_code == "ValidationException"
    for code in ("ThrottlingException", "AccessDeniedException", "InternalFailure"):
        with pytest.raises(AwsError) as raised:
            call("describe endpoint x", raising(code, "nope"))
        assert raised.value.aws_code == code and not isinstance(raised.value, AwsNotFound)
    with pytest.raises(AwsError, match="kept throttling after 10 attempts"):
        call("list packages", raising("ThrottlingException", "Rate exceeded"))
