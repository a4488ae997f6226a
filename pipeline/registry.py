"""The model registry a run registers into, and register-and-deploy written once on top of it.

:class:`Registry` is what every run needs of a registry: register a gated model as its signature's next version
(unless unchanged), approve or reject a version, the latest Approved one, deploy into an MME prefix, sync a prefix
with the latest Approved versions. Two implementations, chosen where a command starts: :class:`LocalRegistry` here
(a folder with the SageMaker Model Registry's shape) and ``genesig.pipeline.sagemaker.registry.SageMakerRegistry``.

The local registry: one model package group per signature (the artifact name); packages are numbered from 1; each
holds its artifact (copied in, verified), the evaluation metrics and an approval status (``PendingManualApproval``,
``Approved``, ``Rejected``). Writes are atomic and a per-group lock makes version numbers unique across concurrent
runs. Deploying never overwrites: SageMaker may keep serving a cached model whose object was replaced, so a name,
once published, always means the same bytes; publishing is atomic and idempotent.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from genesig.artifact import Manifest, read_artifact
from genesig.artifact.manifest import model_identity
from genesig.artifact.package import publish_bytes, remove_stale_partials, sha256_file, with_version
from genesig.errors import Conflict, DataError, GenesigError, ModelNotFound
from genesig.pipeline.evaluation import Evaluation
from genesig.pipeline.results import SignatureResult
from genesig.pipeline.sagemaker.names import artifact_name

logger = logging.getLogger(__name__)

ApprovalStatus = Literal["PendingManualApproval", "Approved", "Rejected"]
# The parts of evaluation.json a package records as its metrics.
APPROVAL_STATUSES: tuple[str, ...] = ("PendingManualApproval", "Approved", "Rejected")
DeployAction = Literal["deployed", "already there", "skipped", "failed"]


@dataclass(frozen=True)
class Registration:
    """A registered model package, as either registry names it: its group and version, its approval, the versioned
    artifact file it is deployed as, whether this call created it, and (SageMaker) its ARN."""

    group: str
    version: int
    approval_status: str
    artifact_file: str
    created: bool = False
    package_arn: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Deployment:
    """One package into an MME prefix: what it is deployed as (the object's name: a file name locally, the S3 key on
    AWS), and what happened (deployed; already there, the same bytes; skipped, not Approved; failed, with why)."""

    group: str
    version: int | None
    name: str
    action: DeployAction
    reason: str = ""


class Registry(Protocol):
    """What a run needs of a model registry (local: :class:`LocalRegistry`; SageMaker: ``SageMakerRegistry``)."""

    def register(self, artifact: Path, evaluation: Evaluation, *, approval_status: str) -> Registration:
        """The gated model as its signature's next version, unless the latest version is the same model (then that
        one, ``created`` False)."""
        ...

    def approve(self, group: str, version: int, status: str, reason: str = "") -> Registration:
        """Set a version's approval status (Approved, Rejected, PendingManualApproval)."""
        ...

    def latest_approved(self, group: str) -> Registration | None: ...

    def groups(self) -> list[str]: ...

    def deploy(self, package: Registration, prefix: str) -> Deployment:
        """An Approved package's artifact into the MME ``prefix`` under its versioned name, never over other bytes."""
        ...

    def sync(self, prefix: str) -> list[Deployment]:
        """The latest Approved version of every group into ``prefix``; running it again changes nothing."""
        ...


def register_and_deploy(
    registry: Registry,
    result: SignatureResult,
    artifact: Path,
    evaluation: Evaluation,
    *,
    approval_status: str,
    prefix: str | None,
) -> SignatureResult:
    """A signature that passed the gate into ``registry`` (its next version, unless unchanged) and, when Approved,
    into the MME ``prefix``: run-local and the signature-set run both register here. Returns the result with its
    registration; a failure is this signature's ("error"), never the run's."""
    try:
        package = registry.register(artifact, evaluation, approval_status=approval_status)
    except (GenesigError, OSError, ValueError) as exc:
        message = _said(exc)
        logger.warning("signature %s: registration failed: %s", result.signature, message)
        return result.failed(f"registration failed: {message}")
    unchanged = f"; unchanged since version {package.version}, not registered again"
    registered = replace(
        result,
        reason=result.reason + ("" if package.created else unchanged),
        group=package.group,
        version=package.version,
        approval_status=package.approval_status,
        package_arn=package.package_arn,
        registered="registered" if package.created else "unchanged",
    )
    if not prefix or package.approval_status != "Approved":
        return registered
    try:
        deployment = registry.deploy(package, prefix)
    except (GenesigError, OSError) as exc:
        message = _said(exc)
        logger.warning("signature %s: registered, deploy failed: %s", result.signature, message)
        # Registered all the same: the registration stays on the row, `genesig sync` deploys it once fixed.
        return registered.failed(f"registered as version {package.version}, deploy failed: {message}")
    if deployment.action == "failed":
        return registered.failed(f"registered as version {package.version}, deploy failed: {deployment.reason}")
    return replace(registered, deployed=deployment.name)


def _said(exc: Exception) -> str:
    """An error in one line: our own errors' message, anything else with its type."""
    return exc.message if isinstance(exc, GenesigError) else f"{type(exc).__name__}: {exc}"


class DeployRefused(GenesigError):
    status = 409
    code = "deploy_refused"


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

    def registration(self) -> Registration:
        return Registration(self.group, self.version, self.approval_status, self.artifact_name)


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
        self, artifact: Path, evaluation: Evaluation, *, approval_status: str, group: str | None = None
    ) -> Registration:
        """A gated model as its group's next version (the group: its artifact name, unless ``group`` names another),
        unless it is the model of the latest version (same weights, genes, preprocessing and training data): then
        that version, and nothing is written."""
        manifest = read_artifact(artifact).manifest
        group = group or manifest.name
        packages = self.list_model_packages(group)
        latest = packages[-1] if packages else None
        if latest is not None and same_model(read_artifact(Path(latest.artifact)).manifest, manifest):
            return latest.registration()
        package = self.create_model_package(
            group,
            artifact,
            metrics=evaluation.registered_metrics(),
            approval_status=approval_status,  # type: ignore[arg-type]  # checked there
            description=f"signature {manifest.signature.name}; {evaluation.decided.reason}",
        )
        return replace(package.registration(), created=True)

    def approve(self, group: str, version: int, status: str, reason: str = "") -> Registration:
        """``group``: a group, or the signature whose artifact name names it."""
        return self.update_approval_status(artifact_name(group), version, status, reason).registration()  # type: ignore[arg-type]

    def groups(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "group.json").is_file())

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

    def latest_approved(self, group: str) -> Registration | None:
        approved = self.list_model_packages(group, "Approved")
        return approved[-1].registration() if approved else None

    def deploy(self, package: Registration, prefix: str | Path) -> Deployment:
        stored = self.describe_model_package(package.group, package.version)
        if stored.approval_status != "Approved":
            raise DeployRefused(
                f"model package {stored.group}/{stored.version} is {stored.approval_status}; only Approved "
                "packages are deployed (approve it, then run `genesig sync`)"
            )
        source = Path(stored.artifact)
        if sha256_file(source) != stored.sha256:
            raise DeployRefused(f"{source} no longer matches the sha256 recorded at registration")
        read_artifact(source)  # full verification before anything is published
        folder = Path(prefix)
        target = folder / stored.artifact_name
        folder.mkdir(parents=True, exist_ok=True)
        there = Deployment(stored.group, stored.version, stored.artifact_name, "already there")
        if target.exists():
            if sha256_file(target) == stored.sha256:
                return there
            raise Conflict(f"{target} exists with different content; deployed names are never overwritten")
        try:
            publish_bytes(source.read_bytes(), target)
        except FileExistsError:  # another deployer won the race; accept it only if the bytes are ours
            if sha256_file(target) != stored.sha256:
                raise Conflict(f"{target} was published concurrently with different content") from None
            return there
        logger.debug("deployed %s/%d as %s", stored.group, stored.version, stored.artifact_name)
        return Deployment(stored.group, stored.version, stored.artifact_name, "deployed")

    def sync(self, prefix: str | Path) -> list[Deployment]:
        """Also removes what killed deploys left behind: hidden partial files an hour old (never under a model
        name)."""
        folder = Path(prefix)
        if folder.is_dir():
            for name in remove_stale_partials(folder):
                logger.info("removed %s, left by a deploy that never finished", name)
        deployments = []
        for group in self.groups():
            package = self.latest_approved(group)
            if package is None:
                continue
            try:
                deployments.append(self.deploy(package, folder))
            except GenesigError as exc:  # one group's failure is that group's; the others go on
                logger.warning("sync of %s failed: %s", group, exc.message)
                deployments.append(Deployment(group, package.version, "", "failed", exc.message))
        return deployments


def same_model(a: Manifest, b: Manifest) -> bool:
    """Same weights, genes, preprocessing, target and training data: registering again would duplicate it."""
    return model_identity(a) == model_identity(b)
