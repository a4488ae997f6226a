"""The multi-model endpoint on SageMaker: create or update it on the serving image and the MME prefix, wait until
it is in service, delete it, and invoke it with a TargetModel."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from genesig.errors import DataError, GenesigError
from genesig.pipeline.sagemaker.aws import AwsNotFound, call, split_s3
from genesig.pipeline.sagemaker.names import ENTITY_NAME, STAMP_FORMAT, entity_name


class TimedOut(GenesigError):
    status = 504
    code = "timeout"


def check_endpoint_name(name: str) -> str:
    if not ENTITY_NAME.fullmatch(name):
        raise DataError(
            f"endpoint name {name!r} is not one SageMaker accepts: letters, digits and hyphens, at most 63, "
            "starting and ending with a letter or digit"
        )
    return name


def deploy_endpoint(
    sm: Any,
    name: str,
    *,
    image_uri: str,
    prefix: str,
    role_arn: str,
    instance_type: str = "ml.m5.large",
    instance_count: int = 1,
    timeout_s: float = 1800,
    poll_s: float = 30.0,
) -> str:
    """Create the endpoint, or point it at a new model + config; wait (bounded) until InService."""
    check_endpoint_name(name)
    split_s3(prefix)
    model = entity_name(f"{name}-{datetime.now(UTC).strftime(STAMP_FORMAT)}", 63, key=name)
    call(
        "create model",
        sm.create_model,
        ModelName=model,
        ExecutionRoleArn=role_arn,
        PrimaryContainer={"Image": image_uri, "Mode": "MultiModel", "ModelDataUrl": prefix.rstrip("/") + "/"},
    )
    call(
        "create endpoint config",
        sm.create_endpoint_config,
        EndpointConfigName=model,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": model,
                "InitialInstanceCount": instance_count,
                "InstanceType": instance_type,
            }
        ],
    )
    try:
        call(f"look up endpoint {name}", sm.describe_endpoint, EndpointName=name)
        exists = True
    except AwsNotFound:
        exists = False
    if exists:
        call(f"update endpoint {name}", sm.update_endpoint, EndpointName=name, EndpointConfigName=model)
    else:
        call(f"create endpoint {name}", sm.create_endpoint, EndpointName=name, EndpointConfigName=model)
    return wait_in_service(sm, name, timeout_s=timeout_s, poll_s=poll_s)


def wait_in_service(sm: Any, name: str, *, timeout_s: float, poll_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        described = call(f"describe endpoint {name}", sm.describe_endpoint, EndpointName=name)
        status = described["EndpointStatus"]
        if status == "InService":
            return str(status)
        if status == "Failed":
            raise GenesigError(f"endpoint {name} failed: {described.get('FailureReason', 'no reason given')}")
        if time.monotonic() > deadline:
            raise TimedOut(
                f"endpoint {name} is still {status} after {timeout_s:.0f} s; it keeps going: look again later"
            )
        time.sleep(poll_s)


def delete_endpoint(sm: Any, name: str) -> None:
    config = call(f"describe endpoint {name}", sm.describe_endpoint, EndpointName=name)["EndpointConfigName"]
    call(f"delete endpoint {name}", sm.delete_endpoint, EndpointName=name)
    call(f"delete endpoint config {config}", sm.delete_endpoint_config, EndpointConfigName=config)


def predict(
    runtime: Any,
    endpoint: str,
    target_model: str,
    body: bytes,
    content_type: str = "text/csv",
    accept: str = "application/json",
) -> bytes:
    response = call(
        f"invoke {endpoint} ({target_model})",
        runtime.invoke_endpoint,
        EndpointName=endpoint,
        TargetModel=target_model,
        ContentType=content_type,
        Accept=accept,
        Body=body,
    )
    return bytes(response["Body"].read())
