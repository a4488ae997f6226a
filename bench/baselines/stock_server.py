"""The stock approach, for comparison only, as the AWS sample runs it: Multi Model Server through the SageMaker
Inference Toolkit, every loaded model its own backend process running ``torch_handler`` (it imports torch).

In front of it, only what a memory-limited container needs to take part in SageMaker's evict-and-retry loop: with
``GENESIG_MEMORY_LIMIT_MB``, a load answers 507 when the server's memory (PSS of its processes) plus what the last
loads cost would pass the budget, and a load that Multi Model Server fails is unregistered. Everything else is
passed through. Run by the benchmarks through ``genesig.server_process.ServerProcess`` (same environment as
``genesig serve``: ``SAGEMAKER_BIND_TO_PORT``, ``GENESIG_STATE_DIR``, ``GENESIG_MODEL_SERVER_PORT``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import psutil
from aiohttp import web

from genesig.aio_client import AsyncModelServerClient
from genesig.container.memory import pss_bytes
from genesig.container.model_server import model_server_environ, state_paths
from genesig.container.server import become_subreaper, pick_internal_port, stop_descendants
from genesig.container.settings import read_settings

HANDLER = "torch_handler:handle"
# Until a load has been measured: what one torch backend process takes (PSS; torch's libraries are shared).
FIRST_GUESS_BYTES = 200 * 1024 * 1024


class Stock:
    def __init__(self, mms: AsyncModelServerClient, limit_bytes: int) -> None:
        self.mms = mms
        self.limit_bytes = limit_bytes
        self.per_model_bytes = FIRST_GUESS_BYTES
        self.lock = asyncio.Lock()

    @staticmethod
    def used() -> int:
        me = psutil.Process()
        return sum(pss_bytes(p.pid) for p in [me, *me.children(recursive=True)])

    async def load(self, request: web.Request) -> web.Response:
        body = await request.json()
        async with self.lock:
            before = await asyncio.to_thread(self.used)
            if self.limit_bytes and before + self.per_model_bytes > self.limit_bytes:
                return web.json_response({"error": "insufficient_memory", "message": "over budget"}, status=507)
            status, payload, content_type = await self.mms.load(body["model_name"], body["url"])
            if status != 200:
                await self.mms.unload(body["model_name"])
            else:
                self.per_model_bytes = max(await asyncio.to_thread(self.used) - before, 1)
        return web.Response(status=status, body=payload, headers={"Content-Type": content_type})

    async def forward(self, request: web.Request) -> web.Response:
        headers = {k: request.headers[k] for k in ("Content-Type", "Accept") if k in request.headers}
        status, payload, content_type = await self.mms.request(
            request.method, request.path_qs, data=await request.read(), headers=headers
        )
        return web.Response(status=status, body=payload, headers={"Content-Type": content_type})


async def run() -> int:
    settings = read_settings(handler=HANDLER)
    mms_port = settings.model_server_port or pick_internal_port(None)
    paths = state_paths(settings)
    for key in ("logs", "tmp"):
        paths[key].mkdir(parents=True, exist_ok=True)
    env = model_server_environ(settings, mms_port, dict(os.environ))
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parent), env.get("PYTHONPATH", "")])
    launcher = subprocess.Popen([sys.executable, "-m", "genesig.container.model_server"], env=env, cwd=paths["root"])
    mms = AsyncModelServerClient(f"http://127.0.0.1:{mms_port}")
    await mms.start()
    stock = Stock(mms, settings.memory_limit_mb * 1024 * 1024)
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/models", stock.load)
    app.router.add_route("*", "/{tail:.*}", stock.forward)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    while not await mms.ping(timeout_s=2):
        if launcher.poll() is not None:
            return 1
        await asyncio.sleep(0.2)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.port).start()
    await stop.wait()
    await runner.cleanup()
    await mms.close()
    return 0


def main() -> int:
    become_subreaper()  # the MMS launcher detaches the JVM: keep it ours, to stop it
    try:
        return asyncio.run(run())
    except (aiohttp.ClientError, OSError):
        return 1
    finally:
        stop_descendants()


if __name__ == "__main__":
    sys.exit(main())
