"""Deploy: copy an Approved package's artifact into the MME prefix under its immutable versioned name.

Never overwrites: SageMaker may keep serving a cached model whose object was replaced, so
a name, once published, always means the same bytes. Publishing is atomic (a reader sees
nothing or the whole object) and idempotent (the same bytes under the same name is a no-op).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from genesig.artifact import read_artifact
from genesig.artifact.package import publish_bytes, remove_stale_partials, sha256_file
from genesig.errors import Conflict, GenesigError
from genesig.pipeline.registry import LocalRegistry, ModelPackage

logger = logging.getLogger(__name__)


class DeployRefused(GenesigError):
    status = 409
    code = "deploy_refused"


@dataclass(frozen=True)
class Deployment:
    group: str
    version: int
    name: str
    action: Literal["copied", "already deployed"]


def deploy_package(package: ModelPackage, prefix: Path) -> Deployment:
    if package.approval_status != "Approved":
        raise DeployRefused(
            f"model package {package.group}/{package.version} is {package.approval_status}; only Approved "
            "packages are deployed (approve it, then run `genesig sync`)"
        )
    source = Path(package.artifact)
    if sha256_file(source) != package.sha256:
        raise DeployRefused(f"{source} no longer matches the sha256 recorded at registration")
    read_artifact(source)  # full verification before anything is published
    target = prefix / package.artifact_name
    prefix.mkdir(parents=True, exist_ok=True)
    if target.exists():
        if sha256_file(target) == package.sha256:
            return Deployment(package.group, package.version, package.artifact_name, "already deployed")
        raise Conflict(f"{target} exists with different content; deployed names are never overwritten")
    try:
        publish_bytes(source.read_bytes(), target)
    except FileExistsError:  # another deployer won the race; accept it only if the bytes are ours
        if sha256_file(target) != package.sha256:
            raise Conflict(f"{target} was published concurrently with different content") from None
        return Deployment(package.group, package.version, package.artifact_name, "already deployed")
    logger.debug("deployed %s/%d as %s", package.group, package.version, package.artifact_name)
    return Deployment(package.group, package.version, package.artifact_name, "copied")


def sync(registry: LocalRegistry, prefix: Path) -> list[Deployment]:
    """Deploy the latest Approved package of every group; running it again changes nothing.

    Also removes what killed deploys left behind: hidden partial files an hour old (never under a model name).
    """
    if prefix.is_dir():
        for name in remove_stale_partials(prefix):
            logger.info("removed %s, left by a deploy that never finished", name)
    deployments = []
    for group in registry.list_model_package_groups():
        package = registry.latest_approved(group)
        if package is not None:
            deployments.append(deploy_package(package, prefix))
    return deployments
