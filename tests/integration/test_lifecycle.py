"""The serve command stops every process it started: on SIGTERM, and when the model server dies."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from genesig.client import ModelServerClient

from .conftest import ServerFactory, opaque


def load_some(url: str, model_dirs: Callable[..., Path], prefix: str) -> None:
    client = ModelServerClient(url)
    for i in range(3):
        assert client.load(opaque(f"{prefix}{i}"), str(model_dirs(f"{prefix}{i}"))).status == 200


def test_sigterm_stops_every_child(start_server: ServerFactory, model_dirs: Callable[..., Path]) -> None:
    server = start_server()
    load_some(server.url, model_dirs, "term")
    tree = server.descendants()
    assert any("java" in p.name() for p in tree) and any("nginx" in p.name() for p in tree)
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=60) == 0
    _, alive = psutil.wait_procs(tree, timeout=5)
    assert alive == [], f"left behind: {[p.pid for p in alive]}"


def test_serve_exits_when_the_model_server_dies(start_server: ServerFactory, model_dirs: Callable[..., Path]) -> None:
    server = start_server()
    load_some(server.url, model_dirs, "die")
    tree = server.descendants()
    java = next(p for p in tree if p.name() == "java")
    java.kill()
    assert server.process is not None
    assert server.process.wait(timeout=60) == 1
    _, alive = psutil.wait_procs(tree, timeout=5)
    assert alive == [], f"left behind: {[p.pid for p in alive]}"
    assert not ModelServerClient(server.url, timeout=2).ping()
    time.sleep(0)
