"""A local model registry with the SageMaker Model Registry's shape, on a folder.

One model package group per signature (the artifact name); packages are numbered from 1;
each holds its artifact (copied in, verified), the evaluation metrics and an approval status
(``PendingManualApproval``, ``Approved``, ``Rejected``). Writes are atomic and a per-group
lock makes version numbers unique across concurrent runs.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from genesig.artifact import Manifest, read_artifact
from genesig.artifact.manifest import model_identity
from genesig.artifact.package import publish_bytes, sha256_file, with_version
from genesig.errors import Conflict, DataError, ModelNotFound

ApprovalStatus = Literal["PendingManualApproval", "Approved", "Rejected"]
# The parts of evaluation.json a package records as its metrics.
REGISTERED_METRICS = ("metric", "cross_validation", "test", "risk_groups", "significance")
APPROVAL_STATUSES: tuple[str, ...] = ("PendingManualApproval", "Approved", "Rejected")


@dataclass(frozen=True)
class ModelPackage:
    group: str
    version: int
    artifact: str
    artifact_name: str
    sha256: str
    approval_status: ApprovalStatus
    created_at: str
    metrics: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    status_history: list[dict[str, str]] = field(default_factory=list)


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)


class LocalRegistry:
    def __init__(self, root: Path) -> None:
        self.root = root

    def missing_message(self) -> str:
        return (
            f"no registry at {self.root}: nothing was registered there; check the folder (run-local's --workdir holds "
            "registry/), or register first (genesig run-local, genesig step register)"
        )

    def _group_dir(self, group: str) -> Path:
        if not group or "/" in group or group.startswith("."):
            raise DataError(f"invalid model package group name {group!r}")
        return self.root / group

    @contextmanager
    def _locked(self, group: str) -> Iterator[Path]:
        folder = self._group_dir(group)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield folder
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def create_model_package_group(self, group: str, description: str = "") -> None:
        """Idempotent, like the SageMaker call used by pipelines (an existing group is kept)."""
        with self._locked(group) as folder:
            if not (folder / "group.json").exists():
                _write_json(
                    folder / "group.json",
                    {
                        "name": group,
                        "description": description,
                        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                    },
                )

    def list_model_package_groups(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "group.json").is_file())

    def next_version(self, group: str) -> int:
        return max((p.version for p in self.list_model_packages(group)), default=0) + 1

    def create_model_package(
        self,
        group: str,
        artifact: Path,
        *,
        metrics: dict[str, Any],
        approval_status: ApprovalStatus = "PendingManualApproval",
        description: str = "",
    ) -> ModelPackage:
        """Register a verified artifact as the group's next version: the registry assigns versions, under the group's
        lock, and the stored artifact is renumbered to it (a model is trained before it knows its version)."""
        if approval_status not in APPROVAL_STATUSES:
            raise DataError(f"approval status must be one of {', '.join(APPROVAL_STATUSES)}")
        read_artifact(artifact)  # verified before anything is written
        self.create_model_package_group(group)
        with self._locked(group) as folder:
            version = self.next_version(group)
            manifest, body = with_version(artifact, version)
            stored = folder / "artifacts" / manifest.artifact_name
            stored.parent.mkdir(parents=True, exist_ok=True)
            if stored.exists():
                raise Conflict(f"{stored} already exists; artifact names are immutable")
            publish_bytes(body, stored)
            now = datetime.now(UTC).isoformat(timespec="seconds")
            package = ModelPackage(
                group=group,
                version=version,
                artifact=str(stored.resolve()),
                artifact_name=manifest.artifact_name,
                sha256=sha256_file(stored),
                approval_status=approval_status,
                created_at=now,
                metrics=metrics,
                description=description,
                status_history=[{"status": approval_status, "at": now, "reason": "registered"}],
            )
            _write_json(folder / "packages" / f"{version}.json", asdict(package))
            return package

    def register(
        self,
        group: str,
        artifact: Path,
        evaluation: dict[str, Any],
        *,
        approve: bool,
        description: str = "",
    ) -> tuple[ModelPackage, bool]:
        """Register a gated model as the group's next version, unless it is the model of the latest version (same
        weights, genes, preprocessing and training data): then that version is returned and nothing is written.
        The second value says whether a package was created. ``run-local`` and ``genesig step register`` both
        register through here."""
        packages = self.list_model_packages(group)
        latest = packages[-1] if packages else None
        new = read_artifact(artifact).manifest
        if latest is not None and same_model(read_artifact(Path(latest.artifact)).manifest, new):
            return latest, False
        package = self.create_model_package(
            group,
            artifact,
            metrics={k: evaluation[k] for k in REGISTERED_METRICS if k in evaluation},
            approval_status="Approved" if approve else "PendingManualApproval",
            description=description,
        )
        return package, True

    def list_model_packages(self, group: str, approval_status: str | None = None) -> list[ModelPackage]:
        folder = self._group_dir(group) / "packages"
        if not folder.is_dir():
            return []
        packages = [ModelPackage(**json.loads(p.read_text())) for p in folder.glob("*.json")]
        packages.sort(key=lambda p: p.version)
        return [p for p in packages if approval_status in (None, p.approval_status)]

    def describe_model_package(self, group: str, version: int) -> ModelPackage:
        path = self._group_dir(group) / "packages" / f"{version}.json"
        if not path.is_file():
            if not self.root.is_dir():
                raise ModelNotFound(self.missing_message())
            raise ModelNotFound(f"model package {group}/{version} does not exist in {self.root}")
        return ModelPackage(**json.loads(path.read_text()))

    def update_approval_status(
        self, group: str, version: int, status: ApprovalStatus, reason: str = ""
    ) -> ModelPackage:
        if status not in APPROVAL_STATUSES:
            raise DataError(f"approval status must be one of {', '.join(APPROVAL_STATUSES)}")
        self.describe_model_package(group, version)  # refused before the lock creates anything
        with self._locked(group) as folder:
            package = self.describe_model_package(group, version)
            history = package.status_history + [
                {"status": status, "at": datetime.now(UTC).isoformat(timespec="seconds"), "reason": reason}
            ]
            updated = ModelPackage(**{**asdict(package), "approval_status": status, "status_history": history})
            _write_json(folder / "packages" / f"{version}.json", asdict(updated))
            return updated

    def latest_approved(self, group: str) -> ModelPackage | None:
        approved = self.list_model_packages(group, "Approved")
        return approved[-1] if approved else None


def same_model(a: Manifest, b: Manifest) -> bool:
    """Same weights, genes, preprocessing, target and training data: registering again would duplicate it."""
    return model_identity(a) == model_identity(b)
