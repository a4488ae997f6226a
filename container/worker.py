"""One pool worker's signatures: opened on first use from the entries the gateway wrote, kept until the gateway
removes them (see :mod:`genesig.container.pool`), answered with numpy only.

A worker process imports numpy, msgspec and the artifact contract, never torch. Weights that are large enough to
fill pages of their own are memory-mapped from the verified folder, so every worker shares one copy in the page
cache; small ones are read (a mapping would cost a whole page for a few hundred bytes).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genesig.artifact import SignatureModel, load_model_dir
from genesig.artifact.package import opened_memory, weights_mappable
from genesig.container import codec
from genesig.container.pool import PoolPaths, PoolView
from genesig.container.settings import ServingSettings
from genesig.errors import ArtifactError, ModelNotFound, PayloadTooLarge

logger = logging.getLogger(__name__)
# How often a worker waiting at a fence looks whether the gateway has released it.
FENCE_POLL_S = 0.0005


class ModelLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Prefixes every line with the signature's name and version (the name SageMaker loads it under is opaque)."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"model={self.extra['model']} {msg}", kwargs  # type: ignore[index]


@dataclass(frozen=True)
class OpenedModel:
    load_id: int
    model: SignatureModel
    id_columns: tuple[str, ...]
    label: str
    log: ModelLogger
    memory_bytes: int


class PoolWorker:
    def __init__(self, paths: PoolPaths, settings: ServingSettings) -> None:
        self.view = PoolView(paths)
        self.settings = settings
        self.models: dict[str, OpenedModel] = {}
        self.generation = self.view.generation
        self.fence_reached = 0

    # --- state --------------------------------------------------------------------------------------------
    def after_fork(self, slot: str | None = None) -> None:
        """In a worker just forked from the pool's server process: its own slot, before it takes any request (the
        gateway's fences count the workers by their slots)."""
        self.models.clear()
        self.fence_reached = 0
        self.view.open_slot(slot)
        self._write_slot()

    def _ensure_slot(self) -> None:
        # Without preloading, a worker loads the pool itself and was not forked after it: open the slot now.
        if not self.view.has_slot:
            self.after_fork()

    def _write_slot(self) -> None:
        self.view.write_slot(
            self.fence_reached,
            self.generation,
            sum(m.memory_bytes for m in self.models.values()),
            len(self.models),
        )

    def _sync(self) -> None:
        """Drop the signatures whose entries the gateway removed since this worker last looked."""
        generation = self.view.generation
        if generation == self.generation:
            return
        for name, opened in list(self.models.items()):
            if not self.view.has_entry(name, opened.load_id):
                del self.models[name]
                opened.log.info("closed")
        self.generation = generation
        self._write_slot()

    def model(self, name: str) -> OpenedModel:
        self._ensure_slot()
        self._sync()
        opened = self.models.get(name)
        if opened is None:
            opened = self._open(name)
            self.models[name] = opened
            self._write_slot()
        return opened

    def _open(self, name: str) -> OpenedModel:
        entry = self.view.entry(name)
        if entry is None:
            raise ModelNotFound(f"model {name} is not loaded")
        started = time.perf_counter()
        folder = Path(entry.url)
        mapped = weights_mappable(folder)
        model = load_model_dir(folder, map_weights=mapped)
        manifest = model.manifest
        if (manifest.name, manifest.version) != (entry.model, entry.version):
            raise ArtifactError(f"the folder of model {name} changed after it was loaded; unload it and load it again")
        label = f"{manifest.name}-v{manifest.version}"
        log = ModelLogger(logger, {"model": label})
        log.info(
            "opened genes=%d kind=%s seconds=%.4f",
            len(manifest.genes),
            manifest.model.kind,
            time.perf_counter() - started,
        )
        return OpenedModel(
            load_id=entry.load_id,
            model=model,
            id_columns=tuple(dict.fromkeys((manifest.id_column, "id"))),
            label=label,
            log=log,
            memory_bytes=opened_memory(manifest, mapped=mapped)[0],
        )

    # --- requests -----------------------------------------------------------------------------------------
    def invoke(
        self, name: str, body: bytes, content_type: str | None, accept: str | None
    ) -> tuple[bytes, str, OpenedModel]:
        """Decode, validate, predict, encode. Raises ``GenesigError`` (4xx) for bad requests."""
        started = time.perf_counter()
        opened = self.model(name)
        response_type = codec.negotiate_accept(accept)
        manifest = opened.model.manifest
        batch = codec.decode_request(body, content_type, manifest.genes, opened.id_columns, self.settings.max_rows)
        predictions = opened.model.predict(batch.matrix)
        payload = codec.encode_response(manifest, predictions, batch.ids, response_type)
        if len(payload) > self.settings.max_response_bytes:
            raise PayloadTooLarge(
                f"the response would be {len(payload)} bytes, over the {self.settings.max_response_bytes}-byte limit;"
                " send fewer rows per request"
            )
        opened.log.info("invoked rows=%d ms=%.2f", batch.matrix.shape[0], (time.perf_counter() - started) * 1000)
        return payload, response_type, opened

    def fence(self, fence: int, timeout_s: float) -> bool:
        """Reach fence ``fence``: everything this worker took before it is answered. Wait for the gateway to release
        it, then drop what the gateway removed meanwhile. False if the release did not come in time."""
        self._ensure_slot()
        self.fence_reached = max(self.fence_reached, fence)
        self._write_slot()
        deadline = time.monotonic() + timeout_s
        released = True
        while self.view.released < fence:
            if time.monotonic() > deadline:
                released = False
                break
            time.sleep(FENCE_POLL_S)
        self._sync()
        return released


def warm_up() -> None:
    """Run the numeric and codec paths once in the pool's server process, so forked workers start warm."""
    from genesig.artifact.synthetic import synthetic_manifest, synthetic_tensors

    manifest = synthetic_manifest("warm-up", [f"G{i}" for i in range(4)])
    model = SignatureModel(manifest, synthetic_tensors(manifest))
    body = b'{"inputs": [[1.0, 2.0, 3.0, 4.0]]}'
    batch = codec.decode_request(body, codec.JSON, manifest.genes, ("Case_ID", "id"), 1)
    codec.encode_response(manifest, model.predict(batch.matrix), None, codec.JSON)
    codec.encode_response(manifest, model.predict(np.ones((1, 4))), None, codec.CSV)
