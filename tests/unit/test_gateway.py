"""The gateway against a fake Multi Model Server that reproduces MMS's load/unload behaviour and its 507 defect."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from genesig.container.gateway import Gateway
from genesig.container.memory import MemoryStatus
from genesig.container.settings import DRAIN_HEADER, read_settings

MIB = 1024 * 1024


class FakeMms:
    """Registers models like MMS 1.1.11: a failed load (507 or 500) stays registered until DELETE."""

    def __init__(self) -> None:
        self.registered: dict[str, str] = {}
        self.next_load_status = 200
        self.load_delay_s = 0.0
        # MMS tearing down a failed load: this many DELETEs answer 404 while the model stays registered.
        self.phantom_deletes = 0
        self.calls: list[tuple[str, str]] = []
        self.workers: dict[str, asyncio.Lock] = {}
        self.failing_deletes = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/ping", self.ping)
        app.router.add_post("/models", self.load)
        app.router.add_get("/models", self.list)
        app.router.add_get("/models/{name}", self.describe)
        app.router.add_delete("/models/{name}", self.delete)
        app.router.add_post("/models/{name}/invoke", self.invoke)
        return app

    async def ping(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "Healthy"})

    def _missing(self, name: str) -> web.Response:
        body = {"code": 404, "type": "ModelNotFoundException", "message": f"Model not found: {name}"}
        return web.json_response(body, status=404)

    async def load(self, request: web.Request) -> web.Response:
        spec = await request.json()
        self.calls.append(("load", spec["model_name"]))
        if spec["model_name"] in self.registered:
            return web.json_response({"code": 409, "type": "ConflictStatusException", "message": "exists"}, status=409)
        self.registered[spec["model_name"]] = spec["url"]
        await asyncio.sleep(self.load_delay_s)  # a real load takes ~0.3 s: concurrent loads overlap
        status = self.next_load_status
        if status != 200:
            return web.json_response(
                {"code": status, "type": "InternalServerException", "message": "Failed to start workers"}, status=status
            )
        return web.json_response({"status": "Workers scaled"})

    async def list(self, request: web.Request) -> web.Response:
        return web.json_response({"models": [{"modelName": n, "modelUrl": u} for n, u in self.registered.items()]})

    async def describe(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.registered:
            return self._missing(name)
        return web.json_response([{"modelName": name, "modelUrl": self.registered[name], "workers": []}])

    async def delete(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.calls.append(("delete", name))
        if self.failing_deletes:
            self.failing_deletes -= 1
            body = {"code": 500, "type": "InternalServerException", "message": "Failed to stop workers"}
            return web.json_response(body, status=500)
        if self.phantom_deletes and name in self.registered:
            self.phantom_deletes -= 1
            return self._missing(name)
        if self.registered.pop(name, None) is None:
            return self._missing(name)
        return web.json_response({"status": "unregistered"})

    async def invoke(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.registered:
            return self._missing(name)
        # One worker per model taking requests in order (asyncio.Lock is FIFO).
        async with self.workers.setdefault(name, asyncio.Lock()):
            if name not in self.registered:  # unloaded while queued: MMS never answers these
                await asyncio.Event().wait()
            if request.headers.get(DRAIN_HEADER):
                return web.json_response({"drained": True})
            payload = await request.read()
            if payload == b"slow":
                await asyncio.sleep(0.5)
            return web.Response(body=payload, content_type=request.content_type)


Scenario = Callable[..., Any]


@pytest.fixture
def scenario() -> Scenario:
    """Run ``body(client, fake_mms, memory)`` against a gateway in front of a fake MMS."""

    def run(body: Callable[[TestClient, FakeMms, dict[str, int]], Any], **settings: Any) -> None:
        async def main() -> None:
            fake = FakeMms()
            async with TestServer(fake.app()) as mms:
                memory = {"free": 4096 * MIB}
                probe = lambda: MemoryStatus(limit_bytes=memory["free"], used_bytes=0, source="test")  # noqa: E731
                gateway = Gateway(
                    read_settings({}, **{"memory_reserve_mb": 0, "backend_watchdog_s": 0, **settings}),
                    str(mms.make_url("")),
                    probe,
                )
                async with TestClient(TestServer(gateway.app())) as client:
                    await body(client, fake, memory)

        asyncio.run(main())

    return run


async def load(client: TestClient, name: str, url: Path | str) -> tuple[int, dict[str, Any]]:
    resp = await client.post("/models", json={"model_name": name, "url": str(url)})
    return resp.status, await resp.json()


def test_load_describe_unload(scenario: Scenario, make_model_dir: Callable[..., Path], genes: list[str]) -> None:
    model_dir = make_model_dir()

    async def body(client: TestClient, fake: FakeMms, _: dict[str, int]) -> None:
        status, doc = await load(client, "h1", model_dir)
        assert status == 200 and doc["model"]["genes"] == genes
        described = await (await client.get("/models/h1")).json()
        assert described["genesig"]["genes"] == genes and described["genesig"]["artifact"] == "metagene_19-v1.tar.gz"
        assert (await client.delete("/models/h1")).status == 200
        assert fake.registered == {}

    scenario(body)


def test_second_load_is_409_without_touching_mms(scenario: Scenario, make_model_dir: Callable[..., Path]) -> None:
    model_dir = make_model_dir()

    async def body(client: TestClient, fake: FakeMms, _: dict[str, int]) -> None:
        assert (await load(client, "h1", model_dir))[0] == 200
        status, doc = await load(client, "h1", model_dir)
        assert (status, doc["error"]) == (409, "conflict")
        assert fake.calls.count(("load", "h1")) == 1

    scenario(body)


def test_mms_507_is_cleaned_up_so_the_retry_loads(scenario: Scenario, make_model_dir: Callable[..., Path]) -> None:
    model_dir = make_model_dir()

    async def body(client: TestClient, fake: FakeMms, _: dict[str, int]) -> None:
        fake.next_load_status = 507
        status, doc = await load(client, "h1", model_dir)
        assert (status, doc["error"]) == (507, "insufficient_memory")
        assert "h1" not in fake.registered, "a failed load must not stay registered"
        fake.next_load_status = 200
        assert (await load(client, "h1", model_dir))[0] == 200

    scenario(body)


def test_a_failed_load_mms_still_lists_after_a_404_unload_is_unloaded_again(
    scenario: Scenario, make_model_dir: Callable[..., Path]
) -> None:
    # Seen with MMS 1.1.11 under concurrent loads: DELETE right after a failed load answers 404, then the model
    # is listed again with no worker (invokes 503, loads 409) until it is unloaded once more.
    model_dir = make_model_dir()

    async def body(client: TestClient, fake: FakeMms, _: dict[str, int]) -> None:
        fake.next_load_status = 507
        fake.phantom_deletes = 2
        assert (await load(client, "h1", model_dir))[0] == 507
        assert "h1" not in fake.registered and fake.calls.count(("delete", "h1")) == 3
        fake.next_load_status = 200
        assert (await load(client, "h1", model_dir))[0] == 200

    scenario(body)


def test_mms_500_at_load_leaves_no_registration(scenario: Scenario, make_model_dir: Callable[..., Path]) -> None:
    model_dir = make_model_dir()

    async def body(client: TestClient, fake: FakeMms, _: dict[str, int]) -> None:
        fake.next_load_status = 500
        status, doc = await load(client, "h1", model_dir)
        assert status == 502 and "InternalServerException" not in json.dumps(doc)
        assert fake.registered == {}

    scenario(body)


def test_admission_answers_507_before_mms_sees_the_load(
    scenario: Scenario, make_model_dir: Callable[..., Path]
) -> None:
    model_dir = make_model_dir()

    async def body(client: TestClient, fake: FakeMms, memory: dict[str, int]) -> None:
        memory["free"] = 10 * MIB
        status, doc = await load(client, "h1", model_dir)
        assert (status, doc["error"]) == (507, "insufficient_memory")
        assert doc["detail"]["needed_bytes"] > doc["detail"]["free_bytes"]
        assert fake.calls == [], "MMS never registered the refused model"
        memory["free"] = 4096 * MIB  # SageMaker unloaded LRU models
        assert (await load(client, "h1", model_dir))[0] == 200

    scenario(body)


def test_the_reserve_is_honoured(scenario: Scenario, make_model_dir: Callable[..., Path]) -> None:
    model_dir = make_model_dir()

    async def body(client: TestClient, _fake: FakeMms, memory: dict[str, int]) -> None:
        memory["free"] = 100 * MIB
        status, doc = await load(client, "h1", model_dir)
        assert status == 507 and "above the 80 MiB reserve" in doc["message"]

    scenario(body, memory_reserve_mb=80)


def test_concurrent_loads_cannot_overcommit(scenario: Scenario, make_model_dir: Callable[..., Path]) -> None:
    dirs = [make_model_dir(f"sig{i}") for i in range(4)]

    async def body(client: TestClient, fake: FakeMms, memory: dict[str, int]) -> None:
        fake.load_delay_s = 0.5
        memory["free"] = 110 * MIB  # room for two 48 MiB estimates in flight, not four
        results = await asyncio.gather(*(load(client, f"h{i}", d) for i, d in enumerate(dirs)))
        assert sorted(status for status, _ in results) == [200, 200, 507, 507]

    scenario(body)


def test_invalid_artifact_is_422_and_never_registered(scenario: Scenario, make_model_dir: Callable[..., Path]) -> None:
    model_dir = make_model_dir()
    (model_dir / "weights.safetensors").write_bytes(b"tampered")

    async def body(client: TestClient, fake: FakeMms, _: dict[str, int]) -> None:
        status, doc = await load(client, "h1", model_dir)
        assert (status, doc["error"]) == (422, "invalid_artifact") and "sha256" in doc["message"]
        assert fake.calls == []

    scenario(body)


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        (b"not json", 400),
        (b'{"model_name": "x"}', 400),
        (b'{"model_name": "a/b", "url": "/x"}', 400),
        (b'{"model_name": "x", "url": "relative/model"}', 400),
    ],
)
def test_malformed_load_requests(scenario: Scenario, payload: bytes, status: int) -> None:
    async def body(client: TestClient, _fake: FakeMms, _: dict[str, int]) -> None:
        resp = await client.post("/models", data=payload, headers={"Content-Type": "application/json"})
        assert resp.status == status and (await resp.json())["error"] == "bad_request"

    scenario(body)


def test_missing_model_folder_is_404(scenario: Scenario, tmp_path: Path) -> None:
    async def body(client: TestClient, _fake: FakeMms, _: dict[str, int]) -> None:
        status, doc = await load(client, "h1", tmp_path / "nowhere")
        assert (status, doc["error"]) == (404, "model_not_found")

    scenario(body)


def test_mms_error_bodies_lose_their_java_class_names(scenario: Scenario) -> None:
    async def body(client: TestClient, _fake: FakeMms, _: dict[str, int]) -> None:
        for resp in (
            await client.post("/models/nope/invoke", data=b"{}"),
            await client.get("/models/nope"),
            await client.delete("/models/nope"),
        ):
            doc = await resp.json()
            assert resp.status == 404 and doc == {"error": "model_not_found", "message": "Model not found: nope"}

    scenario(body)


def test_invoke_is_forwarded_byte_for_byte(scenario: Scenario, make_model_dir: Callable[..., Path]) -> None:
    model_dir = make_model_dir()

    async def body(client: TestClient, _fake: FakeMms, _: dict[str, int]) -> None:
        await load(client, "h1", model_dir)
        resp = await client.post("/models/h1/invoke", data=b"a,b\n1,2\n", headers={"Content-Type": "text/csv"})
        assert resp.status == 200 and await resp.read() == b"a,b\n1,2\n" and resp.content_type == "text/csv"

    scenario(body)


def test_list_limit_is_validated(scenario: Scenario) -> None:
    async def body(client: TestClient, _fake: FakeMms, _: dict[str, int]) -> None:
        assert (await client.get("/models?limit=0")).status == 400
        assert (await client.get("/models?limit=2")).status == 200

    scenario(body)


def test_unreachable_model_server_is_502(make_model_dir: Callable[..., Path]) -> None:
    async def main() -> None:
        probe = lambda: MemoryStatus(limit_bytes=1 << 40, used_bytes=0, source="test")  # noqa: E731
        gateway = Gateway(read_settings({}), "http://127.0.0.1:9", probe)
        async with TestClient(TestServer(gateway.app())) as client:
            resp = await client.get("/models")
            assert resp.status == 502 and (await resp.json())["error"] == "model_server_error"
            assert (await client.get("/ping")).status == 503

    asyncio.run(main())


def test_an_unload_waits_for_accepted_invokes_and_turns_new_ones_away(
    scenario: Scenario, make_model_dir: Callable[..., Path]
) -> None:
    model_dir = make_model_dir()

    async def body(client: TestClient, fake: FakeMms, _: dict[str, int]) -> None:
        await load(client, "h1", model_dir)
        slow = asyncio.create_task(client.post("/models/h1/invoke", data=b"slow"))
        await asyncio.sleep(0.1)
        queued = asyncio.create_task(client.post("/models/h1/invoke", data=b"[1]"))
        await asyncio.sleep(0.1)
        unload = asyncio.create_task(client.delete("/models/h1"))
        await asyncio.sleep(0.1)
        turned_away = await client.post("/models/h1/invoke", data=b"{}")
        assert turned_away.status == 404 and not unload.done()
        assert (await turned_away.json())["message"] == "model h1 is not loaded"
        assert [(await r).status for r in (slow, queued)] == [200, 200]
        assert (await unload).status == 200 and fake.registered == {}

    scenario(body)


def test_a_dead_backend_is_unloaded_at_once(
    scenario: Scenario, make_model_dir: Callable[..., Path], tmp_path: Path
) -> None:
    """The gateway watches each backend through a pidfd (the periodic check is off here): its exit unloads."""
    model_dir = make_model_dir()

    async def body(client: TestClient, fake: FakeMms, _: dict[str, int]) -> None:
        backend = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import time; time.sleep(60)", "--model-name", "h1"
        )
        try:
            await load(client, "h1", model_dir)
            assert (await client.post("/models/h1/invoke", data=b"{}")).status == 200
            backend.kill()
            await backend.wait()
            for _ in range(100):
                if "h1" not in fake.registered:
                    break
                await asyncio.sleep(0.01)
            assert ("delete", "h1") in fake.calls and "h1" not in fake.registered
            assert (await client.post("/models/h1/invoke", data=b"{}")).status == 404
            assert (await load(client, "h1", model_dir))[0] == 200
        finally:
            if backend.returncode is None:
                backend.kill()
                await backend.wait()

    scenario(body)


def test_a_failed_unload_leaves_the_model_serving(scenario: Scenario, make_model_dir: Callable[..., Path]) -> None:
    model_dir = make_model_dir()

    async def body(client: TestClient, fake: FakeMms, _: dict[str, int]) -> None:
        await load(client, "h1", model_dir)
        fake.failing_deletes = 1
        assert (await client.delete("/models/h1")).status == 500
        assert (await client.post("/models/h1/invoke", data=b"[1]")).status == 200, "still loaded: still served"
        assert (await client.delete("/models/h1")).status == 200
        assert (await client.post("/models/h1/invoke", data=b"[1]")).status == 404

    scenario(body)
