"""The local endpoint's routing against a scripted model server: which models it unloads and which files it keeps."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

from genesig.artifact.synthetic import write_synthetic_artifact
from genesig.local_endpoint import LocalEndpoint, ModelSource, opaque_name
from genesig.server_process import free_port


class ScriptedModelServer:
    """Answers like MMS behind the gateway: a load that does not fit in ``capacity`` slots is a 507."""

    def __init__(self, slots: dict[str, int], capacity: int) -> None:
        self.slots = slots  # opaque name -> slots its load takes
        self.capacity = capacity
        self.loaded: set[str] = set()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/models", self._load)
        app.router.add_delete("/models/{name}", self._unload)
        app.router.add_post("/models/{name}/invoke", self._invoke)
        return app

    async def _load(self, request: web.Request) -> web.Response:
        name = (await request.json())["model_name"]
        if sum(self.slots[n] for n in self.loaded) + self.slots[name] > self.capacity:
            return web.json_response({"message": "insufficient memory"}, status=507)
        self.loaded.add(name)
        return web.json_response({"status": "loaded"})

    async def _unload(self, request: web.Request) -> web.Response:
        self.loaded.discard(request.match_info["name"])
        return web.json_response({"status": "unloaded"})

    async def _invoke(self, request: web.Request) -> web.Response:
        status = 200 if request.match_info["name"] in self.loaded else 404
        return web.json_response({"predictions": []}, status=status)


def test_models_unloaded_to_make_room_leave_the_disk_at_once(tmp_path: Path) -> None:
    # One load that needs two models unloaded: with a zero-byte cache limit, both of their extracted folders go
    # as they are unloaded (before, they stayed until the next extraction).
    prefix = tmp_path / "prefix"
    prefix.mkdir()
    targets = []
    for name, genes in (("a", 3), ("b", 3), ("c", 3), ("wide", 6)):
        write_synthetic_artifact(prefix, name, [f"G{i}" for i in range(genes)])
        targets.append(f"{name}-v1.tar.gz")
    slots = {opaque_name(t): 2 if t.startswith("wide") else 1 for t in targets}
    server = ScriptedModelServer(slots, capacity=3)

    async def scenario() -> tuple[list[str], set[str], dict[str, int]]:
        runner = web.AppRunner(server.app())
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        endpoint = LocalEndpoint(ModelSource(str(prefix)), f"http://127.0.0.1:{port}", tmp_path / "cache", 0)
        await endpoint.start()
        try:
            for target in targets:
                response = await endpoint.invoke(target, b"", "text/csv", None)
                assert response.status == 200, target
            extracted = {p.parent.name for p in endpoint.cache.folder.glob("*/model")}
            return list(endpoint.loader.loaded), extracted, dict(endpoint.cache.on_disk)
        finally:
            await endpoint.close()
            await runner.cleanup()

    loaded, extracted, on_disk = asyncio.run(scenario())
    assert loaded == ["c-v1.tar.gz", "wide-v1.tar.gz"]  # a and b, least recently used, were unloaded
    assert extracted == {opaque_name(t) for t in loaded}, "unloaded models' files are deleted"
    assert set(on_disk) == set(loaded)
