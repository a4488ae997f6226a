"""`genesig sync --prefix s3://…` killed in the middle of uploading an artifact: no object under the model name, and
the next sync publishes every artifact whole.

A TCP proxy in front of the S3 server forwards the first PUT into the prefix only up to half of its body and then
holds it, so the sync is stuck mid-upload exactly as when a process dies or a network drops; the test then kills
it. Its own moto server keeps other tests' model package groups out of this sync.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from genesig.server_process import free_port
from tests.emulators import REGION, strict_moto

from .packages import register


class StallingProxy:
    """Forwards bytes both ways; the first request starting with ``PUT /<path_prefix>`` gets half its body through."""

    def __init__(self, upstream_port: int, path_prefix: str) -> None:
        self.upstream_port = upstream_port
        self.marker = f"PUT /{path_prefix}".encode()
        self.port = free_port()
        self.stalled = threading.Event()
        self.stalled_key = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> StallingProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _serve(self) -> None:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", self.port)

    async def _connection(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        down = asyncio.ensure_future(self._pipe(server_r, client_w))
        await self._upload(client_r, server_w)  # returns when the client goes away
        server_w.close()  # the S3 server sees the connection drop mid-body
        down.cancel()
        client_w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()

    async def _upload(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        allowance: int | None = None  # bytes still forwarded once the PUT to stall has been seen
        while data := await reader.read(65536):
            if allowance is None and not self.stalled.is_set() and data.startswith(self.marker):
                head_end = data.index(b"\r\n\r\n") + 4
                length = int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", data[:head_end]).group(1))  # type: ignore[union-attr]
                self.stalled_key = data.split(b" ", 2)[1].decode()
                allowance = head_end + length // 2
            if allowance is not None:
                data, allowance = data[:allowance], max(allowance - len(data), 0)
                if not allowance:
                    self.stalled.set()
            writer.write(data)
            await writer.drain()


@pytest.fixture
def own_moto(aws_env: dict[str, str]) -> Iterator[str]:
    with strict_moto() as (url, _strict):
        yield url


def test_a_sync_killed_mid_upload_leaves_no_object_and_the_next_sync_publishes_whole(
    aws: dict[str, Any],
    own_moto: str,
    make_archive: Callable[..., Path],
    record_property: pytest.RecordProperty,
) -> None:
    s3 = aws["s3"]
    s3_url = aws["env"]["AWS_ENDPOINT_URL_S3"]
    bucket = f"b{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    own = {**aws, "sagemaker": boto3.client("sagemaker", region_name=REGION, endpoint_url=own_moto)}
    # Big enough that half a body is many TCP segments (random genes' weights do not compress).
    archives = {
        name: make_archive(name, [f"G{i}" for i in range(20_000)], seed=i) for i, name in enumerate(("sig_a", "sig_b"))
    }
    for archive in archives.values():
        register(own, archive, bucket)
    prefix = f"s3://{bucket}/mme/"

    def sync(s3_endpoint: str) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "genesig.cli", "sync", "--prefix", prefix]
        command += ["--sagemaker-endpoint-url", own_moto, "--s3-endpoint-url", s3_endpoint]
        return subprocess.Popen(command, env=aws["env"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    port = int(s3_url.rsplit(":", 1)[1])
    with StallingProxy(port, f"{bucket}/mme/") as proxy:
        proc = sync(f"http://127.0.0.1:{proxy.port}")
        assert proxy.stalled.wait(timeout=120), proc.communicate(timeout=10)[0].decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        time.sleep(0.5)  # the proxy drops the S3 connection when the client's goes
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="mme/").get("Contents", [])
    record_property("interrupted_put", proxy.stalled_key)
    record_property("objects_after_kill", [o["Key"] for o in listed])
    assert listed == [], f"a partial object is visible: {listed}"

    rerun = sync(s3_url)
    output = rerun.communicate(timeout=120)[0].decode()
    assert rerun.returncode == 0, output[-2000:]
    for name, archive in archives.items():
        key = f"mme/{archive.name}"
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert hashlib.sha256(body).digest() == hashlib.sha256(archive.read_bytes()).digest(), name
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="mme/")["Contents"]) == sorted(
        f"mme/{a.name}" for a in archives.values()
    )
