"""The local registry and deploy: versions, approval, only Approved deployed, never overwritten, idempotent sync."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from genesig.artifact import read_artifact
from genesig.errors import Conflict, ModelNotFound
from genesig.pipeline.registry import DeployRefused, LocalRegistry
from tests.evaluations import an_evaluation


@pytest.fixture
def registry(tmp_path: Path) -> LocalRegistry:
    return LocalRegistry(tmp_path / "registry")


def register(registry: LocalRegistry, make_archive: Callable[..., Path], group: str = "metagene_19", **kw: object):  # type: ignore[no-untyped-def]
    version = registry.next_version(group)
    archive = make_archive(group, version=version, seed=version)
    return registry.create_model_package(group, archive, metrics={"auc": 0.7}, **kw)  # type: ignore[arg-type]


def test_versions_approval_and_history(registry: LocalRegistry, make_archive: Callable[..., Path]) -> None:
    first = register(registry, make_archive)
    second = register(registry, make_archive, approval_status="Approved")
    assert (first.version, first.approval_status, second.version) == (1, "PendingManualApproval", 2)
    assert registry.latest_approved("metagene_19") == second.registration()
    approved = registry.update_approval_status("metagene_19", 1, "Approved", "reviewed by A")
    assert [h["status"] for h in approved.status_history] == ["PendingManualApproval", "Approved"]
    assert registry.latest_approved("metagene_19").version == 2  # type: ignore[union-attr]
    assert [p.version for p in registry.list_model_packages("metagene_19", "Approved")] == [1, 2]
    assert registry.groups() == ["metagene_19"]
    with pytest.raises(ModelNotFound):
        registry.describe_model_package("metagene_19", 9)


def test_the_registry_assigns_the_version_and_renumbers_the_artifact(
    registry: LocalRegistry, make_archive: Callable[..., Path]
) -> None:
    package = registry.create_model_package("metagene_19", make_archive(version=3), metrics={})
    assert (package.version, package.artifact_name) == (1, "metagene_19-v1.tar.gz")
    stored = read_artifact(Path(package.artifact)).manifest
    assert stored.version == 1, "a model is trained before it knows its version; the registry gives it"


def test_concurrent_registration_gets_distinct_versions(
    registry: LocalRegistry, make_archive: Callable[..., Path]
) -> None:
    archives = [make_archive(version=v, seed=v) for v in (1, 2, 3, 4, 5, 6, 7, 8)]
    outcomes: list[int] = []

    def worker(mine: list[Path]) -> None:
        for archive in mine:
            outcomes.append(registry.create_model_package("metagene_19", archive, metrics={}).version)

    threads = [threading.Thread(target=worker, args=(archives[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == list(range(1, 9)), "every registration got its own version"
    for package in registry.list_model_packages("metagene_19"):
        assert read_artifact(Path(package.artifact)).manifest.version == package.version


def test_only_approved_packages_are_deployed(
    registry: LocalRegistry, make_archive: Callable[..., Path], tmp_path: Path
) -> None:
    package = register(registry, make_archive)
    with pytest.raises(DeployRefused, match="is PendingManualApproval; only Approved"):
        registry.deploy(package.registration(), tmp_path / "mme")
    rejected = registry.update_approval_status("metagene_19", 1, "Rejected")
    with pytest.raises(DeployRefused):
        registry.deploy(rejected.registration(), tmp_path / "mme")
    assert not (tmp_path / "mme").exists() or not list((tmp_path / "mme").iterdir())


def test_deploy_is_idempotent_and_never_overwrites(
    registry: LocalRegistry, make_archive: Callable[..., Path], tmp_path: Path
) -> None:
    package = register(registry, make_archive, approval_status="Approved")
    prefix = tmp_path / "mme"
    assert registry.deploy(package.registration(), prefix).action == "deployed"
    assert registry.deploy(package.registration(), prefix).action == "already there"
    (prefix / package.artifact_name).write_bytes(b"someone else's bytes")
    with pytest.raises(Conflict, match="never overwritten"):
        registry.deploy(package.registration(), prefix)
    assert (prefix / package.artifact_name).read_bytes() == b"someone else's bytes"


def test_tampered_registry_artifact_is_not_deployed(
    registry: LocalRegistry, make_archive: Callable[..., Path], tmp_path: Path
) -> None:
    package = register(registry, make_archive, approval_status="Approved")
    Path(package.artifact).write_bytes(b"tampered")
    with pytest.raises(DeployRefused, match="no longer matches"):
        registry.deploy(package.registration(), tmp_path / "mme")
    assert not (tmp_path / "mme" / package.artifact_name).exists()


def test_sync_deploys_the_latest_approved_of_each_group(
    registry: LocalRegistry, make_archive: Callable[..., Path], tmp_path: Path
) -> None:
    register(registry, make_archive, "metagene_19", approval_status="Approved")
    register(registry, make_archive, "metagene_19", approval_status="Approved")
    register(registry, make_archive, "metagene_19")  # pending: not deployed
    register(registry, make_archive, "metagene_3")  # no approved version
    prefix = tmp_path / "mme"
    first = registry.sync(prefix)
    assert [(d.name, d.action) for d in first] == [("metagene_19-v2.tar.gz", "deployed")]
    assert [d.action for d in registry.sync(prefix)] == ["already there"]
    assert sorted(p.name for p in prefix.iterdir()) == ["metagene_19-v2.tar.gz"]


KILLED_DEPLOY = """
import os, sys, time
from pathlib import Path
from genesig.pipeline.registry import LocalRegistry

def stall(fd):  # the bytes are written, not yet published: the worst moment to die
    Path(sys.argv[3]).touch()
    time.sleep(60)

os.fsync = stall
registry = LocalRegistry(Path(sys.argv[1]))
registry.deploy(registry.describe_model_package("metagene_19", 1).registration(), Path(sys.argv[2]))
"""


def test_a_deploy_killed_halfway_leaves_no_object_under_the_model_name(
    registry: LocalRegistry, make_archive: Callable[..., Path], tmp_path: Path
) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    package = register(registry, make_archive, approval_status="Approved")
    prefix, stalled = tmp_path / "mme", tmp_path / "stalled"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_DEPLOY, str(registry.root), str(prefix), str(stalled)])
    deadline = time.monotonic() + 60
    while not stalled.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the deploy never reached its write"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (prefix / package.artifact_name).exists(), "a reader could have seen a partial artifact"
    # Only a hidden temporary file can remain; the next deploy publishes the whole artifact.
    assert all(p.name.startswith(".") for p in prefix.iterdir())
    assert registry.deploy(package.registration(), prefix).action == "deployed"
    assert (prefix / package.artifact_name).read_bytes() == Path(package.artifact).read_bytes()
    # The next sync removes the killed deploy's partial file once it is an hour old, never a live one.
    (partial,) = [p for p in prefix.iterdir() if p.name.startswith(".")]
    assert registry.sync(prefix) and partial.exists(), "a fresh partial may belong to a deploy in progress"
    hour_ago = time.time() - 3601
    os.utime(partial, (hour_ago, hour_ago))
    registry.sync(prefix)
    assert sorted(p.name for p in prefix.iterdir()) == [package.artifact_name]


def test_approving_in_a_folder_with_no_registry_says_so_and_creates_nothing(tmp_path: Path) -> None:
    registry = LocalRegistry(tmp_path / "nowhere" / "registry")
    with pytest.raises(ModelNotFound, match="no registry at .*nowhere/registry: nothing was registered there"):
        registry.update_approval_status("g", 1, "Approved")
    assert not (tmp_path / "nowhere").exists()


def test_approving_a_version_that_does_not_exist_leaves_the_registry_as_it_was(
    registry: LocalRegistry, make_archive: Callable[..., Path]
) -> None:
    register(registry, make_archive)
    before = sorted(p.name for p in registry.root.rglob("*"))
    with pytest.raises(ModelNotFound, match="model package other/1 does not exist in"):
        registry.update_approval_status("other", 1, "Approved")
    assert sorted(p.name for p in registry.root.rglob("*")) == before


def test_register_and_deploy_records_the_registration_on_the_result(
    registry: LocalRegistry, make_archive: Callable[..., Path], tmp_path: Path
) -> None:
    """The one register-and-deploy of run-local and the set run: the next version, deployed when Approved; the same
    model again is not registered again (and says so); a failure is the signature's outcome, not an exception."""
    from genesig.pipeline.registry import register_and_deploy
    from genesig.pipeline.results import Outcome, SignatureResult

    passed = SignatureResult("metagene_19", "metagene_19", ["A"], [], Outcome.PASSED, reason="q 0.01 <= FDR 0.1")
    archive, prefix = make_archive("metagene_19"), str(tmp_path / "mme")
    evaluation = an_evaluation(gate={"passed": True, "reason": "q 0.01 <= FDR 0.1", "final": True})
    first = register_and_deploy(registry, passed, archive, evaluation, approval_status="Approved", prefix=prefix)
    assert (first.version, first.registered, first.deployed) == (1, "registered", "metagene_19-v1.tar.gz")
    assert (first.group, first.approval_status, first.outcome) == ("metagene_19", "Approved", "passed")
    again = register_and_deploy(registry, passed, archive, evaluation, approval_status="Approved", prefix=prefix)
    assert (again.version, again.registered) == (1, "unchanged") and "not registered again" in again.reason
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"not an artifact")
    failed = register_and_deploy(registry, passed, broken, evaluation, approval_status="Approved", prefix=prefix)
    assert failed.outcome == "error" and failed.reason.startswith("registration failed: ")
    assert passed.outcome == "passed" and passed.version is None, "the result given is not changed"
    # Registered, but its name in the prefix holds other bytes: an error that keeps the registration on the row.
    other = make_archive("metagene_19", version=2, seed=7)
    (tmp_path / "mme" / "metagene_19-v2.tar.gz").write_bytes(b"someone else's bytes")
    clash = register_and_deploy(registry, passed, other, evaluation, approval_status="Approved", prefix=prefix)
    assert (clash.outcome, clash.version, clash.registered, clash.deployed) == ("error", 2, "registered", "")
    assert clash.reason.startswith("registered as version 2, deploy failed: ") and "never overwritten" in clash.reason


def test_sync_reports_a_group_that_fails_and_deploys_the_others(
    registry: LocalRegistry, make_archive: Callable[..., Path], tmp_path: Path
) -> None:
    register(registry, make_archive, "metagene_19", approval_status="Approved")
    register(registry, make_archive, "metagene_3", approval_status="Approved")
    prefix = tmp_path / "mme"
    prefix.mkdir()
    (prefix / "metagene_19-v1.tar.gz").write_bytes(b"someone else's bytes")
    deployments = {d.group: d for d in registry.sync(prefix)}
    assert deployments["metagene_19"].action == "failed" and "never overwritten" in deployments["metagene_19"].reason
    assert deployments["metagene_3"].action == "deployed"
