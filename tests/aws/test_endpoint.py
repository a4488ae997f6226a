"""The multi-model endpoint and TargetModel invocations against moto (behind the strict layer)."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from genesig.errors import DataError
from genesig.pipeline.sagemaker.aws import AwsNotFound, call
from genesig.pipeline.sagemaker.endpoint import delete_endpoint, deploy_endpoint

from .packages import new_bucket, register

ROLE = "arn:aws:iam::123456789012:role/genesig"


class UpdatableEndpoints:
    """moto's server does not implement UpdateEndpoint; this adds it (the endpoint takes the new config)."""

    def __init__(self, sm: Any) -> None:
        self.sm = sm
        self.configs: dict[str, str] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sm, name)

    def update_endpoint(self, EndpointName: str, EndpointConfigName: str) -> Any:  # noqa: N803
        self.sm.describe_endpoint_config(EndpointConfigName=EndpointConfigName)  # must exist
        self.configs[EndpointName] = EndpointConfigName
        return {}

    def describe_endpoint(self, EndpointName: str) -> Any:  # noqa: N803
        described = self.sm.describe_endpoint(EndpointName=EndpointName)
        described["EndpointConfigName"] = self.configs.get(EndpointName, described["EndpointConfigName"])
        return described


def test_endpoint_create_update_delete(aws: dict[str, Any]) -> None:
    sm = UpdatableEndpoints(aws["sagemaker"])
    name = f"genesig-{uuid.uuid4().hex[:6]}"
    assert deploy_endpoint(sm, name, image_uri="img:1", prefix="s3://b/mme/", role_arn=ROLE, poll_s=0.0) == "InService"
    config = sm.describe_endpoint_config(
        EndpointConfigName=sm.describe_endpoint(EndpointName=name)["EndpointConfigName"]
    )
    container = sm.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])["PrimaryContainer"]
    assert container["Mode"] == "MultiModel" and container["ModelDataUrl"] == "s3://b/mme/"
    deploy_endpoint(sm, name, image_uri="img:2", prefix="s3://b/mme/", role_arn=ROLE, poll_s=0.0)
    updated = sm.describe_endpoint_config(
        EndpointConfigName=sm.describe_endpoint(EndpointName=name)["EndpointConfigName"]
    )
    assert (
        sm.describe_model(ModelName=updated["ProductionVariants"][0]["ModelName"])["PrimaryContainer"]["Image"]
        == "img:2"
    )
    delete_endpoint(aws["sagemaker"], name)
    with pytest.raises(AwsNotFound):
        call("describe", aws["sagemaker"].describe_endpoint, EndpointName=name)


def test_an_endpoint_name_aws_refuses_is_refused_here_first(aws: dict[str, Any]) -> None:
    with pytest.raises(DataError, match="not one SageMaker accepts"):
        deploy_endpoint(aws["sagemaker"], "genesig_mme", image_uri="i", prefix="s3://b/m/", role_arn=ROLE, poll_s=0)


class RuntimeRecorder(http.server.BaseHTTPRequestHandler):
    """Stands in for SageMaker Runtime's InvokeEndpoint REST call and records what botocore sent."""

    seen: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        RuntimeRecorder.seen.append(
            {"path": self.path, "target": self.headers.get("X-Amzn-SageMaker-Target-Model"), "body": body}
        )
        answer = json.dumps(
            {
                "model": "m",
                "version": 2,
                "output": "probability",
                "predictions": [{"probability": 0.25, "risk_group": "low"}],
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def runtime_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RuntimeRecorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_predict_command_sends_the_resolved_target_model(
    aws: dict[str, Any], make_archive: Callable[..., Path], runtime_url: str, tmp_path: Path
) -> None:
    signature = f"sig_{uuid.uuid4().hex[:6]}"
    register(aws, make_archive(signature), new_bucket(aws))
    patients = tmp_path / "patients.csv"
    patients.write_text("LRIG1,HPGD,GDF15\n1,2,3\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "genesig.cli",
            "predict",
            "--signature",
            signature,
            "--input",
            str(patients),
            "--endpoint",
            "genesig-mme",
            "--runtime-endpoint-url",
            runtime_url,
            "--out",
            str(tmp_path / "out.json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=aws["env"],
    )
    assert result.returncode == 0, result.stderr[-2000:]
    [request] = [r for r in RuntimeRecorder.seen if r["body"] == patients.read_bytes()]
    assert request["path"] == "/endpoints/genesig-mme/invocations"
    assert request["target"] == f"{signature}-v1.tar.gz"
    assert json.loads((tmp_path / "out.json").read_text())["predictions"][0]["risk_group"] == "low"
