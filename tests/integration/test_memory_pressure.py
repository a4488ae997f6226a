"""SageMaker's evict-and-retry loop: 507 when memory is short, and the same load succeeds once LRU models go."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from genesig.client import ModelServerClient
from genesig.server_process import ServerProcess

from .conftest import FIXTURES, ServerFactory, mms_client, opaque

pytestmark = pytest.mark.integration


def test_admission_507_then_unload_lru_then_retry_succeeds(
    start_server: ServerFactory, model_dirs: Callable[..., Path]
) -> None:
    # A 1200 MB budget for the whole server (JVM + gateway + backends, charged by PSS): room for some models only.
    server = start_server({"GENESIG_MEMORY_LIMIT_MB": "1200", "GENESIG_MEMORY_RESERVE_MB": "0"})
    client = ModelServerClient(server.url)
    loaded: list[tuple[str, Path]] = []
    refused = None
    for i in range(60):
        model_dir = model_dirs(f"pressure{i}")
        name = opaque(f"pressure{i}")
        response = client.load(name, str(model_dir))
        if response.status == 507:
            refused = (name, model_dir, response.json())
            break
        assert response.status == 200, response.body
        loaded.append((name, model_dir))
    assert refused is not None, "the budget never ran out"
    assert len(loaded) >= 2, "the budget should hold a few models"
    name, model_dir, doc = refused
    assert doc["error"] == "insufficient_memory" and "Unload models and retry" in doc["message"]

    # Retrying without freeing anything is still 507 (not 409: nothing was left registered).
    assert client.load(name, str(model_dir)).status == 507
    # SageMaker unloads the least recently used models, then retries.
    for lru_name, _ in loaded[:2]:
        assert client.unload(lru_name).status == 200
    response = client.load(name, str(model_dir))
    assert response.status == 200, response.body
    assert client.invoke(name, b'{"inputs": [[1, 2, 3]]}').status == 200
    assert client.invoke(loaded[-1][0], b'{"inputs": [[1, 2, 3]]}').status == 200, "other models unaffected"


def test_mms_own_507_leaves_nothing_registered(start_server: ServerFactory, model_dirs: Callable[..., Path]) -> None:
    """MMS 1.1.11 keeps a model registered after its backend raises MemoryError; the gateway must undo that."""
    server: ServerProcess = start_server(
        {
            "GENESIG_HANDLER": "oom_handler:handle",
            "PYTHONPATH": os.pathsep.join([str(FIXTURES), os.environ.get("PYTHONPATH", "")]),
        }
    )
    client = ModelServerClient(server.url)
    model_dir = model_dirs("oom")
    marker = model_dir / "FORCE_MEMORY_ERROR"
    marker.touch()
    name = opaque("oom")
    first = client.load(name, str(model_dir))
    assert first.status == 507 and first.json()["error"] == "insufficient_memory"
    assert mms_client(server).describe(name).status == 404, "still registered inside MMS"
    assert client.load(name, str(model_dir)).status == 507, "a retry must not get 409"
    marker.unlink()
    assert client.load(name, str(model_dir)).status == 200
    assert client.invoke(name, b'{"inputs": [[1, 2, 3]]}').status == 200
