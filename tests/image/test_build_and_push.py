"""build_and_push.sh: shellcheck, argument checks, and the call sequence against fake docker and aws."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "build_and_push.sh"

FAKE = """#!/usr/bin/env bash
# Records its arguments; fails with FAKE_FAIL_STATUS when its call line contains FAKE_FAIL_ON.
line="$(basename "$0") $*"
echo "$line" >> "$FAKE_LOG"
if [[ "$line" == "aws sts"* ]]; then echo 123456789012; fi
if [[ "$line" == "aws ecr get-login-password"* ]]; then echo secret-token; fi
if [[ "$line" == "docker login"* ]]; then cat > /dev/null; echo "Login Succeeded"; fi
if [[ "$line" == "docker push"* ]]; then echo "v1: digest: sha256:0123 size: 42"; fi
if [[ -n "${FAKE_RECORD_INPUTS:-}" && "$line" == "docker build"* ]]; then
  ls "${REPO_INPUTS}" > "$FAKE_RECORD_INPUTS"
fi
if [[ -n "${FAKE_FAIL_ON:-}" && "$line" == *"$FAKE_FAIL_ON"* ]]; then exit "${FAKE_FAIL_STATUS:-3}"; fi
exit 0
"""


@pytest.fixture
def fakes(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("docker", "aws"):
        (bin_dir / name).write_text(FAKE)
        (bin_dir / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        {
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "FAKE_LOG": str(tmp_path / "calls.log"),
            "AWS_REGION": "eu-west-1",
            "REPO_INPUTS": str(REPO / "container" / "image" / "inputs"),
        }
    )
    return env


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60)


def calls(env: dict[str, str]) -> list[str]:
    path = Path(env["FAKE_LOG"])
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.parametrize("script", ["build_and_push.sh", "scripts/bootstrap.sh", ".ci/run"])
def test_shellcheck_passes(script: str) -> None:
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    result = subprocess.run([shellcheck, str(REPO / script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def _commit() -> str:
    result = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True)
    return result.stdout.strip() or "nogit"


def test_full_sequence_builds_both_images_and_creates_the_repositories_when_missing(fakes: dict[str, str]) -> None:
    fakes.update(FAKE_FAIL_ON="ecr describe-repositories", FAKE_FAIL_STATUS="254")
    result = run(fakes, "genesig-mme", "v1")
    assert result.returncode == 0, result.stderr
    registry = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
    commit = _commit()
    recorded = calls(fakes)
    login = min(i for i, c in enumerate(recorded) if "get-login-password" in c or c.startswith("docker login"))
    recorded[login : login + 2] = sorted(recorded[login : login + 2])  # the login pipe's two sides run together
    build = "docker build --platform linux/amd64 --target"
    expected = [
        "docker info",
        "aws sts get-caller-identity --query Account --output text",
        f"{build} serve --tag genesig-mme:v1 --tag genesig-mme:{commit} {REPO}",
        "docker image inspect --format {{.Size}} genesig-mme:v1",
        f"{build} train --tag genesig-mme-train:v1 --tag genesig-mme-train:{commit} {REPO}",
        "docker image inspect --format {{.Size}} genesig-mme-train:v1",
    ]
    for repository in ("genesig-mme", "genesig-mme-train"):
        expected += [
            f"aws ecr describe-repositories --region eu-west-1 --repository-names {repository}",
            f"aws ecr create-repository --region eu-west-1 --repository-name {repository} "
            "--image-scanning-configuration scanOnPush=true",
        ]
    expected += [
        "aws ecr get-login-password --region eu-west-1",
        f"docker login --username AWS --password-stdin {registry}",
    ]
    for repository in ("genesig-mme", "genesig-mme-train"):
        for version in ("v1", commit):
            expected += [
                f"docker tag {repository}:{version} {registry}/{repository}:{version}",
                f"docker push {registry}/{repository}:{version}",
            ]
    assert recorded == expected
    # Standard output is the two URIs and nothing else (docker's own output goes to standard error): scripts read
    # them with `read`.
    assert result.stdout.splitlines() == [f"{registry}/genesig-mme:v1", f"{registry}/genesig-mme-train:v1"]
    assert "secret-token" not in result.stdout + result.stderr


def test_build_arguments_reach_the_build_and_inputs_are_staged_then_removed(
    fakes: dict[str, str], tmp_path: Path
) -> None:
    wheel = tmp_path / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
    wheel.write_bytes(b"wheel")
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----")
    fakes["FAKE_RECORD_INPUTS"] = str(tmp_path / "inputs.txt")
    result = run(
        fakes,
        "--no-push",
        "--base-image",
        "base:1",
        "--pip-index-url",
        "https://mirror/simple",
        "--network",
        "host",
        "--torch-wheel",
        str(wheel),
        "--ca-bundle",
        str(bundle),
        "genesig-mme",
        "v3",
    )
    assert result.returncode == 0, result.stderr
    builds = [c for c in calls(fakes) if c.startswith("docker build")]
    assert len(builds) == 2
    for line in builds:
        assert "--build-arg PYTHON_IMAGE=base:1 --build-arg PIP_INDEX_URL=https://mirror/simple --network host" in line
    assert not any(c.startswith("aws") or "push" in c for c in calls(fakes)), "--no-push makes no AWS call"
    assert sorted(Path(fakes["FAKE_RECORD_INPUTS"]).read_text().split()) == sorted(
        ["README.md", "ca-bundle.pem", wheel.name]
    ), "the build saw the staged inputs"
    inputs = REPO / "container" / "image" / "inputs"
    staged = sorted(p.name for p in inputs.iterdir() if not p.name.startswith("."))  # not the builds' lock file
    assert staged == ["README.md"], "inputs are removed after the build"
    assert result.stdout.strip().splitlines() == ["genesig-mme:v3", "genesig-mme-train:v3"]


def test_existing_repository_is_not_created_again_and_tag_defaults_to_latest(fakes: dict[str, str]) -> None:
    result = run(fakes, "genesig-mme")
    assert result.returncode == 0, result.stderr
    assert not any("create-repository" in c for c in calls(fakes))
    assert result.stdout.strip().splitlines()[-2].endswith("genesig-mme:latest")


def test_region_falls_back_to_the_cli_configuration(fakes: dict[str, str]) -> None:
    del fakes["AWS_REGION"]
    result = run(fakes, "genesig-mme")
    assert calls(fakes)[1] == "aws configure get region"
    assert result.returncode == 1 and "no AWS region" in result.stderr
    assert not any(c.startswith("docker build") for c in calls(fakes)), "no build before AWS is known to work"


def test_no_engine_is_one_clear_line(fakes: dict[str, str]) -> None:
    fakes.update(FAKE_FAIL_ON="docker info", FAKE_FAIL_STATUS="1")
    result = run(fakes, "--no-push", "genesig-mme")
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("build_and_push.sh: no Docker engine answers (DOCKER_HOST=") and line.endswith(
        "start dockerd"
    )


@pytest.mark.parametrize(
    ("fail_on", "status"),
    [
        ("sts get-caller-identity", 255),
        ("docker build", 6),
        ("get-login-password", 4),
        ("docker login", 5),
        ("docker push", 7),
    ],
)
def test_any_failing_step_stops_the_script_with_its_status(fakes: dict[str, str], fail_on: str, status: int) -> None:
    fakes.update(FAKE_FAIL_ON=fail_on, FAKE_FAIL_STATUS=str(status))
    result = run(fakes, "genesig-mme", "v2")
    assert result.returncode == status
    # The login pipe's two sides run together, so compare steps, not log order.
    steps = [
        "docker info",
        "sts get-caller-identity",
        "docker build|docker image inspect",
        "ecr describe-repositories|ecr create-repository",
        "get-login-password|docker login",
        "docker tag|docker push",
    ]

    def step(call: str) -> int:
        return next(i for i, s in enumerate(steps) if any(part in call for part in s.split("|")))

    failing = step(fail_on)
    recorded = calls(fakes)
    assert any(fail_on in c for c in recorded)
    assert all(step(c) <= failing for c in recorded), f"a later step ran after the failure: {recorded}"
    if fail_on == "docker push":
        assert sum("docker push" in c for c in recorded) == 1
    if fail_on == "docker build":
        assert sum("docker build" in c for c in recorded) == 1, "the training image is not built after a failure"


@pytest.mark.parametrize("args", [(), ("a", "b", "c"), ("Upper",), ("bad name",), ("ok", "bad tag!")])
def test_bad_arguments_print_usage_and_call_nothing(fakes: dict[str, str], args: tuple[str, ...]) -> None:
    result = run(fakes, *args)
    assert result.returncode == 2
    assert "usage:" in result.stderr
    assert calls(fakes) == []
