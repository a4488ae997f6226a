"""The SageMaker Model Registry side: one model package group per signature, registration that assigns versions
without races, approval, the latest Approved package of a signature, and deployment into the MME S3 prefix.

Registration is our own code (run by the pipelines' RegisterModel jobs), not the SDK's: SageMaker assigns a
package version atomically when the package is created, and the artifact is renumbered to that version if a
concurrent run took the one expected. Each package records, as customer metadata, the artifact's file name
and sha256 and the model's identity, so an unchanged model is never registered twice and `sync` checks the MME
prefix before downloading anything.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from genesig.artifact import read_artifact
from genesig.artifact.manifest import model_identity
from genesig.artifact.package import with_version
from genesig.errors import Conflict, DataError, GenesigError, ModelNotFound
from genesig.pipeline.evaluation import Evaluation
from genesig.pipeline.registry import APPROVAL_STATUSES, Deployment, Registration
from genesig.pipeline.sagemaker.aws import (
    AwsNotFound,
    call,
    head_object,
    paginate,
    read_object,
    s3_join,
    split_s3,
    user_metadata,
    write_object,
)
from genesig.pipeline.sagemaker.names import ENTITY_NAME, GROUP_PREFIX, SignatureNames, description, names_for

logger = logging.getLogger(__name__)

ARTIFACT_FILE_KEY = "genesig:artifact-file"
ARTIFACT_SHA256_KEY = "genesig:artifact-sha256"
MODEL_IDENTITY_KEY = "genesig:model-identity"
CONTENT_TYPES = ["application/json", "text/csv"]
REGISTER_ATTEMPTS = 5
SYNC_WORKERS = 8


def ensure_group(sm: Any, names: SignatureNames) -> None:
    """Create the signature's model package group unless it exists (a concurrent creation is fine too)."""
    try:
        call(
            f"look up model package group {names.group}",
            sm.describe_model_package_group,
            ModelPackageGroupName=names.group,
        )
        return
    except AwsNotFound:
        pass
    try:
        call(
            f"create model package group {names.group}",
            sm.create_model_package_group,
            ModelPackageGroupName=names.group,
            ModelPackageGroupDescription=names.group_description(),
        )
    except GenesigError:
        # Another run may have created it meanwhile; anything else fails the describe too.
        call(
            f"look up model package group {names.group}",
            sm.describe_model_package_group,
            ModelPackageGroupName=names.group,
        )


def packages(sm: Any, group: str, *, status: str | None = None) -> list[dict[str, Any]]:
    """The group's package summaries, oldest first, across every page."""
    kwargs: dict[str, Any] = {"ModelPackageGroupName": group, "SortBy": "CreationTime", "SortOrder": "Ascending"}
    if status:
        kwargs["ModelApprovalStatus"] = status
    found = list(
        paginate(f"list the packages of {group}", sm, "list_model_packages", "ModelPackageSummaryList", **kwargs)
    )
    return sorted(found, key=lambda p: p.get("ModelPackageVersion", 0))


def groups(sm: Any) -> list[str]:
    """Every genesig model package group, across every page."""
    found = paginate(
        "list model package groups",
        sm,
        "list_model_package_groups",
        "ModelPackageGroupSummaryList",
        NameContains=f"{GROUP_PREFIX}-",
    )
    return sorted(
        g["ModelPackageGroupName"] for g in found if g["ModelPackageGroupName"].startswith(f"{GROUP_PREFIX}-")
    )


def describe(sm: Any, package_arn: str) -> dict[str, Any]:
    return dict(call(f"describe {package_arn}", sm.describe_model_package, ModelPackageName=package_arn))


def latest_approved(sm: Any, group: str) -> dict[str, Any] | None:
    """The group's latest Approved package, described; None when it has none (or no such group)."""
    try:
        approved = packages(sm, group, status="Approved")
    except AwsNotFound:
        return None
    return describe(sm, approved[-1]["ModelPackageArn"]) if approved else None


def group_of(name: str) -> str:
    """The group named by what a user typed: a group name (``genesig-...``), a signature's name or its artifact
    name."""
    if name.startswith(f"{GROUP_PREFIX}-") and ENTITY_NAME.fullmatch(name):
        return name
    return names_for(name).group


def package_arn(sm: Any, group: str, version: int) -> str:
    for package in packages(sm, group):
        if package.get("ModelPackageVersion") == version:
            return str(package["ModelPackageArn"])
    raise ModelNotFound(f"model package group {group} has no version {version}")


def set_approval(sm: Any, group: str, version: int, status: str, reason: str = "") -> dict[str, Any]:
    """Approve or reject one version (SageMaker records the change; deploy and sync copy only Approved ones)."""
    if status not in APPROVAL_STATUSES:
        raise DataError(f"approval status must be one of {', '.join(APPROVAL_STATUSES)}, not {status!r}")
    arn = package_arn(sm, group, version)
    update_approval(sm, describe(sm, arn), status, reason)
    return describe(sm, arn)


def update_approval(sm: Any, package: dict[str, Any], status: str, reason: str = "") -> None:
    """Set a described package's approval status. Its customer metadata is sent again: AWS keeps it on an update
    that leaves it out, but the emulator the tests use drops it, and registration relies on it."""
    arn = package["ModelPackageArn"]
    kwargs: dict[str, Any] = {"ModelPackageArn": arn, "ModelApprovalStatus": status}
    if reason:
        kwargs["ApprovalDescription"] = reason[:1024]
    if package.get("CustomerMetadataProperties"):
        kwargs["CustomerMetadataProperties"] = package["CustomerMetadataProperties"]
    call(
        f"set {package.get('ModelPackageGroupName')} v{package.get('ModelPackageVersion')} to {status}",
        sm.update_model_package,
        **kwargs,
    )


def _version_of(arn: str) -> int:
    return int(arn.rsplit("/", 1)[1])


def register_model(
    sm: Any,
    s3: Any,
    *,
    artifact: Path,
    evaluation: Evaluation,
    package_prefix: str,
    serving_image: str,
    approval_status: str,
) -> Registration:
    """Register a gated model as the next version of its signature's group, unless the group's latest package is
    this same model; returns what was registered (or found)."""
    if approval_status not in APPROVAL_STATUSES:
        raise DataError(f"approval status must be one of {', '.join(APPROVAL_STATUSES)}, not {approval_status!r}")
    manifest = read_artifact(artifact).manifest
    names = names_for(manifest.signature.name)
    if names.artifact != manifest.name:
        raise Conflict(f"{artifact.name} is named {manifest.name!r}, but its signature names {names.artifact!r}")
    ensure_group(sm, names)
    identity = model_identity(manifest)
    existing = packages(sm, names.group)
    if existing:
        latest = describe(sm, existing[-1]["ModelPackageArn"])
        metadata = latest.get("CustomerMetadataProperties", {})
        if metadata.get(MODEL_IDENTITY_KEY) == identity:
            logger.info(
                "%s: unchanged since version %d, not registered again", names.group, latest["ModelPackageVersion"]
            )
            return _registration(latest)
    folder = s3_join(package_prefix, names.group, uuid.uuid4().hex)
    model_uri, evaluation_uri = s3_join(folder, "model.tar.gz"), s3_join(folder, "evaluation.json")
    write_object(s3, evaluation_uri, evaluation.to_json())
    predicted = (max((p.get("ModelPackageVersion", 0) for p in existing), default=0)) + 1
    body = _publish_version(s3, artifact, predicted, model_uri)
    response = call(
        f"register {names.group}",
        sm.create_model_package,
        ModelPackageGroupName=names.group,
        ModelPackageDescription=description(f"signature {names.signature}; {evaluation.decided.reason}"),
        ModelApprovalStatus=approval_status,
        InferenceSpecification={
            "Containers": [{"Image": serving_image, "ModelDataUrl": model_uri}],
            "SupportedContentTypes": CONTENT_TYPES,
            "SupportedResponseMIMETypes": CONTENT_TYPES,
        },
        ModelMetrics={"ModelQuality": {"Statistics": {"ContentType": "application/json", "S3Uri": evaluation_uri}}},
        CustomerMetadataProperties=_metadata(names.artifact_file(predicted), body, identity),
    )
    arn = str(response["ModelPackageArn"])
    version = _version_of(arn)
    if version != predicted:
        # A concurrent run registered version `predicted` first: our artifact becomes `version`, at our own key.
        logger.warning(
            "%s: version %d was taken by a concurrent run; registered as %d", names.group, predicted, version
        )
        body = _publish_version(s3, artifact, version, model_uri)
        call(
            f"record {names.group} v{version}",
            sm.update_model_package,
            ModelPackageArn=arn,
            CustomerMetadataProperties=_metadata(names.artifact_file(version), body, identity),
        )
    logger.info("registered %s version %d (%s)", names.group, version, approval_status)
    return Registration(names.group, version, approval_status, names.artifact_file(version), True, arn)


def _publish_version(s3: Any, artifact: Path, version: int, uri: str) -> bytes:
    _, body = with_version(artifact, version)
    write_object(s3, uri, body, metadata={"sha256": hashlib.sha256(body).hexdigest()})
    return body


def _metadata(artifact_file: str, body: bytes, identity: str) -> dict[str, str]:
    return {
        ARTIFACT_FILE_KEY: artifact_file,
        ARTIFACT_SHA256_KEY: hashlib.sha256(body).hexdigest(),
        MODEL_IDENTITY_KEY: identity,
    }


# --- deployment into the MME prefix ---------------------------------------------------------------------------


def deploy_package(sm: Any, s3: Any, package_arn: str, prefix: str) -> Deployment:
    """Copy an Approved package's artifact to ``<prefix>/<name>-v<N>.tar.gz``: never over another object, nothing
    downloaded when the same object is already there (its sha256 recorded on both sides)."""
    package = describe(sm, package_arn)
    group = str(package.get("ModelPackageGroupName", ""))
    version = package.get("ModelPackageVersion")
    status = package.get("ModelApprovalStatus")
    if status != "Approved":
        return Deployment(group, version, "", "skipped", f"{status}; approve it, then run `genesig sync`")
    metadata = package.get("CustomerMetadataProperties", {})
    source = package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]
    name, digest = metadata.get(ARTIFACT_FILE_KEY), metadata.get(ARTIFACT_SHA256_KEY)
    if name and digest:
        target = s3_join(prefix, name)
        existing = head_object(s3, target)
        if existing is not None and user_metadata(existing, "sha256") == digest:
            return Deployment(group, version, split_s3(target)[1], "already there")
    body = read_object(s3, source)
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "model.tar.gz"
        archive.write_bytes(body)
        manifest = read_artifact(archive).manifest  # full verification before anything is published
    if version is not None and manifest.version != version:
        raise Conflict(f"{package_arn} is version {version} but its artifact says version {manifest.version}")
    digest = hashlib.sha256(body).hexdigest()
    target = s3_join(prefix, manifest.artifact_name)
    existing = head_object(s3, target)
    if existing is not None:
        recorded = user_metadata(existing, "sha256")
        if recorded is None:  # not every S3 implementation keeps user metadata: hash the object itself
            recorded = hashlib.sha256(read_object(s3, target)).hexdigest()
        if recorded == digest:
            return Deployment(group, version, split_s3(target)[1], "already there")
        raise Conflict(f"{target} exists with different content; deployed names are never overwritten")
    write_object(s3, target, body, metadata={"sha256": digest})
    return Deployment(group, version, split_s3(target)[1], "deployed")


def sync(sm: Any, s3: Any, prefix: str, *, workers: int = SYNC_WORKERS) -> list[Deployment]:
    """The latest Approved package of every signature into the MME prefix, ``workers`` at a time; one group's
    failure is reported for that group and the others go on. Running it again changes nothing."""
    split_s3(prefix)

    def one(group: str) -> Deployment | None:
        try:
            package = latest_approved(sm, group)
            return None if package is None else deploy_package(sm, s3, package["ModelPackageArn"], prefix)
        except GenesigError as exc:
            logger.warning("sync of %s failed: %s", group, exc.message)
            return Deployment(group, None, "", "failed", exc.message)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return [d for d in pool.map(one, groups(sm)) if d is not None]


def resolve_target_model(sm: Any, signature: str, version: int | None = None) -> str:
    """The TargetModel of a signature (its name as defined, or its artifact name): the latest Approved version's
    artifact, or an explicit version's."""
    names = names_for(signature)
    if version is None:
        package = latest_approved(sm, names.group)
        if package is None:
            raise ModelNotFound(
                f"signature {signature!r} has no Approved model package in {names.group}; approve one "
                f"(genesig registry approve {names.group} VERSION --aws)"
            )
        return str(
            package.get("CustomerMetadataProperties", {}).get(ARTIFACT_FILE_KEY)
            or names.artifact_file(int(package["ModelPackageVersion"]))
        )
    return names.artifact_file(version)


def _registration(package: dict[str, Any]) -> Registration:
    """A described package as a :class:`~genesig.pipeline.registry.Registration`."""
    return Registration(
        group=str(package["ModelPackageGroupName"]),
        version=int(package["ModelPackageVersion"]),
        approval_status=str(package["ModelApprovalStatus"]),
        artifact_file=str(package.get("CustomerMetadataProperties", {}).get(ARTIFACT_FILE_KEY, "")),
        package_arn=str(package["ModelPackageArn"]),
    )


class SageMakerRegistry:
    """The SageMaker Model Registry behind :class:`~genesig.pipeline.registry.Registry`: ``package_prefix`` is where
    registered artifacts and evaluations are written (S3), ``serving_image`` the image their packages name."""

    def __init__(
        self, sm: Any, s3: Any, *, package_prefix: str = "", serving_image: str = "", jobs: int = SYNC_WORKERS
    ) -> None:
        self.sm, self.s3, self.jobs = sm, s3, jobs
        self.package_prefix, self.serving_image = package_prefix, serving_image

    def register(self, artifact: Path, evaluation: Evaluation, *, approval_status: str) -> Registration:
        if not self.package_prefix or not self.serving_image:
            raise DataError("registering in SageMaker needs the package prefix and the serving image")
        return register_model(
            self.sm, self.s3, artifact=artifact, evaluation=evaluation, package_prefix=self.package_prefix,
            serving_image=self.serving_image, approval_status=approval_status,
        )  # fmt: skip

    def approve(self, group: str, version: int, status: str, reason: str = "") -> Registration:
        """``group``: a group name, a signature's name or its artifact name."""
        return _registration(set_approval(self.sm, group_of(group), version, status, reason))

    def latest_approved(self, group: str) -> Registration | None:
        package = latest_approved(self.sm, group)
        return None if package is None else _registration(package)

    def groups(self) -> list[str]:
        return groups(self.sm)

    def deploy(self, package: Registration, prefix: str) -> Deployment:
        return deploy_package(self.sm, self.s3, package.package_arn, prefix)

    def sync(self, prefix: str) -> list[Deployment]:
        return sync(self.sm, self.s3, prefix, workers=self.jobs)
