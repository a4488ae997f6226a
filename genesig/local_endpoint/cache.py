"""The local endpoint's disk cache: each TargetModel fetched from the prefix and extracted once, the least recently
used deleted over a size limit (never one that is loaded or being loaded)."""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from genesig.artifact import extract_artifact
from genesig.artifact.package import NO_SPACE
from genesig.errors import ArtifactError, InsufficientStorage
from genesig.local_endpoint.errors import EndpointError, opaque_name
from genesig.local_endpoint.source import ModelSource

logger = logging.getLogger("genesig.local_endpoint")


class ArtifactCache:
    """Extracted artifacts under ``folder``, least recently used first; ``pinned(target)`` says which must stay
    (loaded, or being loaded). Bookkeeping happens on the event loop only, so concurrent loads never race on it."""

    def __init__(self, source: ModelSource, folder: Path, max_bytes: int, pinned: Callable[[str], bool]) -> None:
        self.source = source
        self.folder = folder.resolve()
        self.max_bytes = max_bytes
        self.pinned = pinned
        self.on_disk: OrderedDict[str, int] = OrderedDict()  # target -> extracted bytes, least recently used first
        self.bytes = 0  # sum of on_disk, kept as it changes (thousands of models: never re-summed)

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o755)  # a model server running as another user (a container's) reads it

    def model_dir(self, target: str) -> Path:
        return self.folder / opaque_name(target) / "model"

    async def extract(self, target: str) -> Path:
        """The target's extracted folder, fetched and extracted (in a thread) unless cached."""
        model_dir = self.model_dir(target)
        if target in self.on_disk and model_dir.is_dir():
            self.on_disk.move_to_end(target)
            return model_dir
        try:
            size = await asyncio.to_thread(self._fetch_and_extract, target, model_dir)
        except InsufficientStorage:
            # The cache's disk is full: drop every extracted model that is not loaded, then try once more.
            freed = self.trim(keep=target, limit=0)
            logger.warning("cache disk full while extracting %s; deleted %d unloaded models, retrying", target, freed)
            try:
                size = await asyncio.to_thread(self._fetch_and_extract, target, model_dir)
            except InsufficientStorage as exc:
                raise EndpointError(
                    507,
                    "ServiceUnavailable",
                    f"no disk space for TargetModel {target} in the model cache: {exc.message}",
                ) from None
        self.bytes += size - self.on_disk.pop(target, 0)
        self.on_disk[target] = size
        self.trim(keep=target)
        return model_dir

    def forget(self, target: str) -> None:
        """Delete a target's files (the model server refused them: fetched again next time)."""
        shutil.rmtree(self.model_dir(target).parent, ignore_errors=True)
        self.bytes -= self.on_disk.pop(target, 0)

    def _fetch_and_extract(self, target: str, model_dir: Path) -> int:
        """Blocking part of a cache miss; touches no shared state. Returns the extracted bytes."""
        if model_dir.is_dir():
            shutil.rmtree(model_dir.parent)  # left by an earlier process: extract again rather than trust it
        with tempfile.TemporaryDirectory(dir=self.folder) as tmp:
            try:
                archive = self.source.fetch(target, Path(tmp) / "artifact.tar.gz")
            except OSError as exc:
                if exc.errno in NO_SPACE:
                    raise InsufficientStorage(f"no space left to download {target}: {exc.strerror}") from None
                if isinstance(exc, FileNotFoundError):
                    raise EndpointError(
                        404, "ValidationError", f"TargetModel {target} is not in the model prefix {self.source.prefix}"
                    ) from None
                raise
            try:
                extract_artifact(archive, model_dir)
            except (InsufficientStorage, ArtifactError) as exc:
                shutil.rmtree(model_dir.parent, ignore_errors=True)
                if isinstance(exc, InsufficientStorage):
                    raise
                raise EndpointError(
                    400, "ValidationError", f"TargetModel {target} is not a valid model artifact: {exc.message}"
                ) from None
        return sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file())

    def trim(self, keep: str, limit: int | None = None) -> int:
        """Delete the least recently used extracted artifacts that are not pinned, down to ``limit`` bytes (default:
        the cache's size limit). Returns how many were deleted."""
        limit = self.max_bytes if limit is None else limit
        deleted = 0
        for target in list(self.on_disk):
            if self.bytes <= limit:
                break
            if target == keep or self.pinned(target):
                continue
            shutil.rmtree(self.model_dir(target).parent, ignore_errors=True)
            self.bytes -= self.on_disk.pop(target)
            deleted += 1
            logger.info("cache: deleted %s from disk", target)
        return deleted
