"""Typed serving settings, read once from the environment (``GENESIG_*`` plus SageMaker's own variables).

msgspec rather than pydantic-settings: the same settings are read in every model
backend process, where each imported megabyte is paid once per loaded model.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Literal

import msgspec

from genesig.errors import BadRequest

PREFIX = "GENESIG_"
# Marks the gateway's fence markers (see genesig.container.pool); nginx strips it from callers' requests.
DRAIN_HEADER = "X-Genesig-Drain"
DEFAULT_HANDLER = "genesig.container.handler:handle"
MIB = 1024 * 1024
# SageMaker Runtime refuses a real-time invocation body over 6 MB itself (HTTP 413), before any container sees it,
# and gives an invocation 60 s (InvokeEndpoint's limits).
SAGEMAKER_MAX_PAYLOAD_BYTES = 6 * MIB
SAGEMAKER_INVOKE_TIMEOUT_S = 60
# Multi Model Server counts headers and framing in its request limit, and nginx's own limit answers in HTML before any
# location: both get this much above max_request_bytes, so that the front (nginx's invocation location or the gateway)
# answers 413 first, in our words.
MODEL_SERVER_HEADROOM_BYTES = MIB


def _doc(text: str, **constraints: int) -> msgspec.Meta:
    return msgspec.Meta(description=text, **constraints)  # type: ignore[call-overload]


class ServingSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Settings of the model server; each field is ``GENESIG_<FIELD>`` in the environment unless noted."""

    host: Annotated[str, _doc("Address the public port binds to.")] = "0.0.0.0"
    port: Annotated[int, _doc("Public port (SAGEMAKER_BIND_TO_PORT, as SageMaker sets it).", ge=1, le=65535)] = 8080
    model_server_port: Annotated[
        int, _doc("Internal Multi Model Server port; 0 picks a free one (SAGEMAKER_SAFE_PORT_RANGE first).", ge=0)
    ] = 0
    state_dir: Annotated[str, _doc("Folder for the model server's config, logs, sockets and pid file.")] = (
        "/tmp/genesig-serve"
    )
    max_rows: Annotated[int, _doc("Most rows accepted in one invocation; more answers 413.", ge=1)] = 10_000
    max_request_bytes: Annotated[
        int,
        _doc(
            "Largest invocation body; a larger one answers 413 before it is read (nginx and the gateway), and Multi"
            " Model Server's own limit sits 1 MiB above it. SageMaker Runtime refuses more than 6 MiB itself.",
            ge=1024,
        ),
    ] = SAGEMAKER_MAX_PAYLOAD_BYTES
    invoke_timeout_s: Annotated[
        int,
        _doc(
            "Longest an invocation may take in the model server before it answers 502/504 (SageMaker gives one 60 s).",
            ge=1,
        ),
    ] = SAGEMAKER_INVOKE_TIMEOUT_S
    max_response_bytes: Annotated[
        int, _doc("Largest response body; MMS kills the worker above ~6.5 MB, so we answer 413 first.", ge=1024)
    ] = 6_000_000
    memory_reserve_mb: Annotated[
        int, _doc("Memory kept free for the JVM, the gateway and the OS; loads that would cut into it get 507.", ge=0)
    ] = 512
    memory_limit_mb: Annotated[
        int,
        _doc("Memory budget for the whole server; 0 means detect it (cgroup limit, else host memory).", ge=0),
    ] = 0
    load_timeout_s: Annotated[int, _doc("Longest wait for the model server to answer a load.", ge=1)] = 120
    startup_timeout_s: Annotated[int, _doc("Longest wait for the model server to become healthy.", ge=1)] = 120
    drain_timeout_s: Annotated[
        float,
        _doc(
            "Longest wait, when a model is unloaded, for the requests it already accepted to be answered;"
            " new requests get 404 at once. 0 unloads without waiting.",
            ge=0,
        ),
    ] = 60.0
    pool_workers: Annotated[
        int,
        _doc(
            "Multi Model Server workers in the pool; each answers for any loaded signature. 0: one per CPU the"
            " container may use.",
            ge=0,
            le=64,
        ),
    ] = 0
    jvm_options: Annotated[
        str,
        _doc(
            "Options of Multi Model Server's JVM (SAGEMAKER_MODEL_SERVER_VMARGS). The toolkit's default turns"
            " container support off, so the JVM sized its heap from the host's memory, not the container's limit."
        ),
    ] = "-XX:+UseContainerSupport -XX:MaxRAMPercentage=10 -XX:+ExitOnOutOfMemoryError"
    log_level: Annotated[str, _doc("Python log level of the gateway and model backends.")] = "INFO"
    front: Annotated[
        Literal["auto", "nginx", "gateway"],
        _doc(
            "What owns the public port: nginx (invocations bypass Python), the Python gateway,"
            " or auto (nginx if installed)."
        ),
    ] = "auto"
    handler: Annotated[str, _doc("Model backend entry point, module:function.")] = DEFAULT_HANDLER


def read_settings(environ: Mapping[str, str] | None = None, **overrides: object) -> ServingSettings:
    """Build settings from ``environ`` (default: the process environment) and explicit overrides."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for field in msgspec.structs.fields(ServingSettings):
        key = PREFIX + field.name.upper()
        if key in env:
            values[field.name] = env[key]
    if "SAGEMAKER_BIND_TO_PORT" in env:
        values["port"] = env["SAGEMAKER_BIND_TO_PORT"]
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        settings = msgspec.convert(values, type=ServingSettings, strict=False)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"invalid serving setting: {exc} (environment variables {PREFIX}*)") from None
    # Absolute from here on: Multi Model Server starts its workers in the model's folder, so a relative state folder
    # handed down to them would name another place.
    return msgspec.structs.replace(settings, state_dir=os.path.abspath(settings.state_dir))


def settings_environ(settings: ServingSettings) -> dict[str, str]:
    """The same settings as environment variables, for the model backend processes to read back."""
    return {PREFIX + k.upper(): str(v) for k, v in msgspec.structs.asdict(settings).items()}
