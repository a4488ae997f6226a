"""The gateway, the load/unload protocol and admission against a fake Multi Model Server pool: one FIFO queue taken by
worker threads that run the real handler (and its pool worker) through MMS's own Context, as the pool's workers do."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from mms.context import Context, RequestProcessor

from genesig.artifact import read_manifest
from genesig.artifact.package import opened_memory
from genesig.container import handler
from genesig.container.gateway import Gateway
from genesig.container.memory import MemoryStatus
from genesig.container.pool import POOL_MODEL, PoolPaths
from genesig.container.settings import DRAIN_HEADER, read_settings
from genesig.container.worker import PoolWorker
from tests.conftest import GENES

MIB = 1024 * 1024
BODY = json.dumps({"inputs": [[1.0] * len(GENES)]}).encode()


class FakePool:
    """Multi Model Server's side: the pool model's one queue, taken in order by ``workers`` threads. A body of
    ``b"slow"`` keeps its worker busy for half a second before it is answered; ``b"die"`` kills its worker, which
    answers 500 as MMS does and is replaced by a new one (a new slot); so do the next ``die_on_markers`` fence
    markers."""

    def __init__(self, state_dir: Path, workers: int, settings: Any) -> None:
        self.paths = PoolPaths.under(state_dir)
        self.settings = settings
        self.jobs: queue.Queue[Any] = queue.Queue()
        self.registered = False
        self.calls: list[tuple[str, str]] = []
        self.workers: list[PoolWorker] = []
        self.slots: dict[int, str] = {}
        self.started = 0
        self.pool_answers_404 = False
        self.die_on_markers = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/ping", self.ping)
        app.router.add_post("/models", self.register)
        app.router.add_delete("/models/{name}", self.unregister)
        app.router.add_post("/models/{name}/invoke", self.invoke)
        app.on_cleanup.append(self.stop)
        return app

    async def ping(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "Healthy"})

    async def register(self, request: web.Request) -> web.Response:
        spec = await request.json()
        self.calls.append(("register", spec["model_name"]))
        assert spec["model_name"] == POOL_MODEL and spec["preload_model"] == "true"
        self.registered = True
        for _ in range(spec["initial_workers"]):
            self._start_worker()
        return web.json_response({"status": "Workers scaled"})

    async def unregister(self, request: web.Request) -> web.Response:
        self.calls.append(("unregister", request.match_info["name"]))
        self.registered = False
        return web.json_response({"status": "unregistered"})

    def _start_worker(self) -> None:
        worker = PoolWorker(self.paths, self.settings)
        self.slots[id(worker)] = f"{os.getpid()}-{self.started}"
        worker.after_fork(self.slots[id(worker)])
        self.started += 1
        self.workers.append(worker)
        threading.Thread(target=self._run, args=(worker,), daemon=True).start()

    def _run(self, worker: PoolWorker) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            headers, body, done = job
            if body == b"slow":
                time.sleep(0.5)
                body = BODY
            marker = any(k.lower() == DRAIN_HEADER.lower() for k in headers)
            if body == b"die" or (marker and self.die_on_markers):
                self.die_on_markers -= marker
                self._die(worker, done)
                return
            context = Context(POOL_MODEL, str(self.paths.model_dir), None, 1, None, "1.1.11")
            context.request_processor = [RequestProcessor(headers)]
            payload = handler.respond(worker, context, {"body": body}, 0)
            status = context.request_processor[0].get_response_status_code() or 200
            done((status, payload, context.get_response_content_type(0) or "application/json"))

    def _die(self, worker: PoolWorker, done: Callable[[Any], None]) -> None:
        (self.paths.workers / self.slots.pop(id(worker))).unlink()  # a dead process's slot is ignored; here: gone
        self.workers.remove(worker)
        done((500, b'{"code":500,"type":"InternalServerException","message":"Worker died."}', "application/json"))
        self._start_worker()

    async def invoke(self, request: web.Request) -> web.Response:
        if request.match_info["name"] != POOL_MODEL or not self.registered or self.pool_answers_404:
            body = {"code": 404, "type": "ModelNotFoundException", "message": "Model not found"}
            return web.json_response(body, status=404)
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Any] = loop.create_future()
        self.jobs.put(
            (dict(request.headers), await request.read(), lambda r: loop.call_soon_threadsafe(answer.set_result, r))
        )
        status, payload, content_type = await answer
        return web.Response(status=status, body=payload, headers={"Content-Type": content_type})

    async def stop(self, _app: web.Application) -> None:
        for _ in range(len(self.workers) + 2):
            self.jobs.put(None)


Scenario = Callable[..., Any]


@pytest.fixture
def scenario(tmp_path: Path) -> Scenario:
    """Run ``body(client, pool, memory, gateway)`` against a gateway in front of a fake pool of two workers."""

    def run(body: Callable[..., Any], *, workers: int = 2, **overrides: Any) -> None:
        settings = read_settings(
            {}, **{"memory_reserve_mb": 0, "state_dir": str(tmp_path / "state"), "drain_timeout_s": 5, **overrides}
        )

        async def main() -> None:
            pool = FakePool(tmp_path / "state", workers, settings)
            async with TestServer(pool.app()) as mms:
                memory = {"limit": 4096 * MIB, "used": 0}
                probe = lambda: MemoryStatus(memory["limit"], memory["used"], "test")  # noqa: E731
                gateway = Gateway(settings, str(mms.make_url("")), probe, workers)
                async with TestClient(TestServer(gateway.app())) as client:
                    await gateway.start_pool()
                    await body(client, pool, memory, gateway)

        asyncio.run(main())

    return run


async def load(client: TestClient, name: str, url: Path | str) -> tuple[int, dict[str, Any]]:
    resp = await client.post("/models", json={"model_name": name, "url": str(url)})
    return resp.status, await resp.json()


async def invoke(client: TestClient, name: str, body: bytes = BODY) -> tuple[int, Any]:
    resp = await client.post(f"/models/{name}/invoke", data=body, headers={"Content-Type": "application/json"})
    return resp.status, await resp.json()


def test_load_invoke_describe_list_unload(scenario: Scenario, make_model_dir: Callable[..., Path]) -> None:
    model_dir = make_model_dir()

    async def body(client: TestClient, pool: FakePool, _memory: dict[str, int], gateway: Gateway) -> None:
        assert pool.calls == [("register", POOL_MODEL)]
        assert (await client.get("/ping")).status == 200
        status, doc = await load(client, "h1", model_dir)
        assert status == 200 and doc["model"]["name"] == "metagene_19"
        assert (pool.paths.entries / "h1").is_file() and (pool.paths.accept / "h1").exists()
        status, answer = await invoke(client, "h1")
        assert status == 200 and answer["model"] == "metagene_19" and len(answer["predictions"]) == 1
        described = await (await client.get("/models/h1")).json()
        assert described["genesig"]["artifact"] == "metagene_19-v1.tar.gz" and len(described["workers"]) == 2
        listed = await (await client.get("/models")).json()
        assert listed == {"models": [{"modelName": "h1", "modelUrl": str(model_dir)}]}
        assert (await client.delete("/models/h1")).status == 200
        assert not (pool.paths.entries / "h1").exists() and not (pool.paths.accept / "h1").exists()
        assert all("h1" not in w.models for w in pool.workers), "every worker dropped it"
        assert (await invoke(client, "h1"))[0] == 404
        assert gateway.admission.committed == 0

    scenario(body)


def test_second_load_is_409(scenario: Scenario, make_model_dir: Callable[..., Path]) -> None:
    model_dir = make_model_dir()

    async def body(client: TestClient, *_: Any) -> None:
        assert (await load(client, "h1", model_dir))[0] == 200
        status, doc = await load(client, "h1", model_dir)
        assert (status, doc["error"]) == (409, "conflict")

    scenario(body)


def test_admission_refuses_with_507_and_registers_nothing(
    scenario: Scenario, make_model_dir: Callable[..., Path]
) -> None:
    model_dir = make_model_dir()

    async def body(client: TestClient, pool: FakePool, memory: dict[str, int], gateway: Gateway) -> None:
        memory["limit"] = 4 * 1024
        status, doc = await load(client, "h1", model_dir)
        assert (status, doc["error"]) == (507, "insufficient_memory")
        assert doc["detail"]["needed_bytes"] > doc["detail"]["free_bytes"]
        assert not (pool.paths.entries / "h1").exists() and not (pool.paths.accept / "h1").exists()
        assert gateway.admission.committed == 0 and gateway.lifecycle.loaded == {}
        memory["limit"] = 4096 * MIB  # SageMaker unloaded LRU models
        await asyncio.sleep(0.3)  # the memory probe is re-read after its quarter-second cache
        assert (await load(client, "h1", model_dir))[0] == 200

    scenario(body)


def test_each_signature_is_charged_for_every_worker_and_the_reserve_is_kept(
    scenario: Scenario, make_model_dir: Callable[..., Path]
) -> None:
    dirs = [make_model_dir(f"sig{i}") for i in range(6)]

    async def body(client: TestClient, _pool: FakePool, memory: dict[str, int], gateway: Gateway) -> None:
        assert (await load(client, "probe", dirs[0]))[0] == 200
        cost = gateway.lifecycle.loaded["probe"].entry.cost_bytes
        manifest = read_manifest(dirs[0])
        private, shared = opened_memory(manifest, mapped=False)
        assert (shared, cost) == (0, 2 * private), "small weights: charged in both workers"
        assert (await client.delete("/models/probe")).status == 200
        memory["used"] = 100 * MIB  # the pool's fixed cost
        memory["limit"] = memory["used"] + MIB + 3 * cost + cost // 2  # room for three and a half above the reserve
        await asyncio.sleep(0.3)  # the memory probe is re-read after its quarter-second cache
        results = [await load(client, f"h{i}", d) for i, d in enumerate(dirs)]
        assert [status for status, _ in results] == [200, 200, 200, 507, 507, 507]
        assert "above the 1 MiB reserve with 3 signatures loaded" in results[3][1]["message"]

    scenario(body, memory_reserve_mb=1)


def test_what_workers_have_opened_is_not_counted_twice(scenario: Scenario, make_model_dir: Callable[..., Path]) -> None:
    dirs = [make_model_dir(f"sig{i}") for i in range(3)]

    async def body(client: TestClient, pool: FakePool, memory: dict[str, int], gateway: Gateway) -> None:
        for i, d in enumerate(dirs):
            assert (await load(client, f"h{i}", d))[0] == 200
            for _ in range(4):
                assert (await invoke(client, f"h{i}"))[0] == 200
        opened = sum(slot.opened_bytes for slot in gateway.registry.slots())
        assert opened > 0
        memory["used"] = 50 * MIB + opened  # the memory the opened signatures take is in use now
        await asyncio.sleep(0.3)  # the memory probe is re-read after its quarter-second cache
        assert gateway.admission.fixed_bytes() == 50 * MIB

    scenario(body)


def test_an_unload_makes_room_at_once_even_within_the_probe_cache(
    scenario: Scenario, make_model_dir: Callable[..., Path]
) -> None:
    """SageMaker's 507 → unload → retry comes within milliseconds: the retry must see the room the unload made, not
    the memory measured before it less what the workers hold after it (which counted the unloaded signature twice)."""
    dirs = [make_model_dir(f"sig{i}") for i in range(4)]

    async def body(client: TestClient, pool: FakePool, memory: dict[str, int], gateway: Gateway) -> None:
        for i, d in enumerate(dirs[:3]):
            assert (await load(client, f"h{i}", d))[0] == 200
            for _ in range(4):
                assert (await invoke(client, f"h{i}"))[0] == 200
        cost = gateway.lifecycle.loaded["h0"].entry.cost_bytes
        opened = sum(slot.opened_bytes for slot in gateway.registry.slots())
        memory["used"] = 100 * MIB + opened
        memory["limit"] = 100 * MIB + MIB + 3 * cost + cost // 2  # three fit, not four
        await asyncio.sleep(0.3)
        assert (await load(client, "h3", dirs[3]))[0] == 507  # measured now, and cached
        assert (await client.delete("/models/h0")).status == 200
        memory["used"] -= opened - sum(slot.opened_bytes for slot in gateway.registry.slots())  # h0's memory freed
        assert (await load(client, "h3", dirs[3]))[0] == 200

    scenario(body, memory_reserve_mb=1)


def test_concurrent_loads_cannot_overcommit(scenario: Scenario, make_model_dir: Callable[..., Path]) -> None:
    dirs = [make_model_dir(f"sig{i}") for i in range(4)]

    async def body(client: TestClient, _pool: FakePool, memory: dict[str, int], gateway: Gateway) -> None:
        assert (await load(client, "probe", dirs[0]))[0] == 200
        cost = gateway.lifecycle.loaded["probe"].entry.cost_bytes
        await client.delete("/models/probe")
        memory["limit"] = 2 * cost + cost // 2
        await asyncio.sleep(0.3)
        results = await asyncio.gather(*(load(client, f"h{i}", d) for i, d in enumerate(dirs)))
        assert sorted(status for status, _ in results) == [200, 200, 507, 507]

    scenario(body)


def test_invalid_artifact_is_422_and_never_registered(scenario: Scenario, make_model_dir: Callable[..., Path]) -> None:
    model_dir = make_model_dir()
    (model_dir / "weights.safetensors").write_bytes(b"tampered")

    async def body(client: TestClient, pool: FakePool, *_: Any) -> None:
        status, doc = await load(client, "h1", model_dir)
        assert (status, doc["error"]) == (422, "invalid_artifact") and "sha256" in doc["message"]
        assert list(pool.paths.entries.iterdir()) == []

    scenario(body)


@pytest.mark.parametrize(
    ("payload", "status", "says"),
    [
        (b"not json", 400, "load body must be JSON"),
        (b'{"model_name": "x"}', 400, "load body must be JSON"),
        (b'{"model_name": "a/b", "url": "/tmp"}', 400, "without '/'"),
        (b'{"model_name": "..", "url": "/tmp"}', 400, "not '.' or '..'"),
        (json.dumps({"model_name": "x" * 300, "url": "/tmp"}).encode(), 400, "at most 255 are accepted"),
        (b'{"model_name": "x", "url": "relative/path"}', 400, "absolute path"),
    ],
)
def test_malformed_load_requests(scenario: Scenario, payload: bytes, status: int, says: str) -> None:
    async def body(client: TestClient, *_: Any) -> None:
        resp = await client.post("/models", data=payload)
        doc = await resp.json()
        assert resp.status == status and says in doc["message"], doc

    scenario(body)


def test_missing_model_folder_is_404(scenario: Scenario, tmp_path: Path) -> None:
    async def body(client: TestClient, *_: Any) -> None:
        status, doc = await load(client, "h1", tmp_path / "nowhere")
        assert (status, doc["error"]) == (404, "model_not_found")

    scenario(body)


def test_invoke_names_the_signature_for_the_pool_and_refuses_unknown_names(
    scenario: Scenario, make_model_dir: Callable[..., Path]
) -> None:
    model_dir = make_model_dir()

    async def body(client: TestClient, pool: FakePool, *_: Any) -> None:
        assert (await load(client, "odd name", model_dir))[0] == 200
        status, answer = await invoke(client, "odd%20name")
        assert status == 200 and answer["model"] == "metagene_19"
        status, doc = await invoke(client, "unknown")
        assert (status, doc["error"]) == (404, "model_not_found")

    scenario(body)


def test_a_missing_pool_is_503_not_404(scenario: Scenario, make_model_dir: Callable[..., Path]) -> None:
    model_dir = make_model_dir()

    async def body(client: TestClient, pool: FakePool, *_: Any) -> None:
        assert (await load(client, "h1", model_dir))[0] == 200
        pool.pool_answers_404 = True  # the pool is being registered again
        status, doc = await invoke(client, "h1")
        assert (status, doc["error"]) == (503, "model_unavailable")

    scenario(body)


def test_list_is_paginated_and_its_parameters_validated(
    scenario: Scenario, make_model_dir: Callable[..., Path]
) -> None:
    model_dir = make_model_dir()

    async def body(client: TestClient, *_: Any) -> None:
        for i in range(5):
            assert (await load(client, f"h{i}", model_dir))[0] == 200
        first = await (await client.get("/models?limit=2")).json()
        assert [m["modelName"] for m in first["models"]] == ["h0", "h1"] and first["nextPageToken"] == "2"
        last = await (await client.get("/models?limit=2&next_page_token=4")).json()
        assert [m["modelName"] for m in last["models"]] == ["h4"] and "nextPageToken" not in last
        for query in ("limit=0", "limit=x", "next_page_token=-1"):
            assert (await client.get(f"/models?{query}")).status == 400

    scenario(body)


def test_unreachable_model_server_is_502_and_ping_unhealthy(
    tmp_path: Path, make_model_dir: Callable[..., Path]
) -> None:
    settings = read_settings({}, state_dir=str(tmp_path / "state"))

    async def main() -> None:
        probe = lambda: MemoryStatus(4096 * MIB, 0, "test")  # noqa: E731
        gateway = Gateway(settings, "http://127.0.0.1:9", probe, 2)
        async with TestClient(TestServer(gateway.app())) as client:
            assert (await client.get("/ping")).status == 503
            assert (await load(client, "h1", make_model_dir()))[0] == 200
            status, doc = await invoke(client, "h1")
            assert (status, doc["error"]) == (502, "model_server_error")

    asyncio.run(main())


def test_an_unload_answers_what_was_accepted_and_turns_new_requests_away(
    scenario: Scenario, make_model_dir: Callable[..., Path]
) -> None:
    model_dir = make_model_dir()

    async def body(client: TestClient, pool: FakePool, *_: Any) -> None:
        assert (await load(client, "h1", model_dir))[0] == 200
        slow = [asyncio.create_task(invoke(client, "h1", b"slow")) for _ in range(3)]
        await asyncio.sleep(0.1)
        started = time.monotonic()
        unload = asyncio.create_task(client.delete("/models/h1"))
        await asyncio.sleep(0.05)
        assert (await invoke(client, "h1"))[0] == 404, "new requests are refused at once"
        assert [s for s, _ in await asyncio.gather(*slow)] == [200, 200, 200], "accepted ones are answered"
        assert (await unload).status == 200
        assert time.monotonic() - started >= 0.4, "the unload waited for the requests it had accepted"

    scenario(body)


def test_unloads_together_share_a_fence_and_other_signatures_keep_serving(
    scenario: Scenario, make_model_dir: Callable[..., Path]
) -> None:
    dirs = [make_model_dir(f"sig{i}") for i in range(6)]

    async def body(client: TestClient, pool: FakePool, _memory: dict[str, int], gateway: Gateway) -> None:
        for i, d in enumerate(dirs):
            assert (await load(client, f"h{i}", d))[0] == 200
            assert (await invoke(client, f"h{i}"))[0] == 200
        fences = gateway.registry._next_fence
        results = await asyncio.gather(*(client.delete(f"/models/h{i}") for i in range(5)), invoke(client, "h5"))
        assert [r.status for r in results[:5]] == [200] * 5 and results[5][0] == 200
        assert gateway.registry._next_fence - fences <= 2, "five unloads, at most two fences"
        assert sorted(gateway.lifecycle.loaded) == ["h5"]
        assert all(set(w.models) <= {"h5"} for w in pool.workers)

    scenario(body)


def test_a_worker_that_dies_holding_a_marker_does_not_stall_the_unload(
    scenario: Scenario, make_model_dir: Callable[..., Path]
) -> None:
    model_dir = make_model_dir()

    async def body(client: TestClient, pool: FakePool, *_: Any) -> None:
        assert (await load(client, "h1", model_dir))[0] == 200
        assert (await invoke(client, "h1"))[0] == 200
        pool.die_on_markers = 1
        started = time.monotonic()
        assert (await client.delete("/models/h1")).status == 200
        assert time.monotonic() - started < 2, "the replacement worker got a marker of its own"
        assert pool.started == 3 and len(pool.workers) == 2
        assert all("h1" not in w.models for w in pool.workers)
        status, doc = await invoke(client, "h1", b"die")
        assert (status, doc["error"]) == (404, "model_not_found")

    scenario(body)


def test_a_worker_that_dies_under_a_request_answers_it_and_the_others_keep_serving(
    scenario: Scenario, make_model_dir: Callable[..., Path]
) -> None:
    model_dir = make_model_dir()

    async def body(client: TestClient, pool: FakePool, *_: Any) -> None:
        assert (await load(client, "h1", model_dir))[0] == 200
        status, doc = await invoke(client, "h1", b"die")
        assert status == 500 and "Exception" not in json.dumps(doc) and "retry" in doc["message"]
        for _ in range(4):
            assert (await invoke(client, "h1"))[0] == 200, "still loaded: no reload by the caller"

    scenario(body)


def test_a_fence_marker_from_a_caller_is_not_special_to_the_gateway(
    scenario: Scenario, make_model_dir: Callable[..., Path]
) -> None:
    model_dir = make_model_dir()

    async def body(client: TestClient, pool: FakePool, *_: Any) -> None:
        assert (await load(client, "h1", model_dir))[0] == 200
        resp = await client.post(
            "/models/h1/invoke", data=BODY, headers={"Content-Type": "application/json", DRAIN_HEADER: "99"}
        )
        # The gateway forwards only the caller's Content-Type and Accept (nginx clears the header itself).
        assert resp.status == 200 and (await resp.json())["model"] == "metagene_19"

    scenario(body)
