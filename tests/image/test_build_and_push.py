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
if [[ "$line" == "docker login"* ]]; then cat > /dev/null; fi
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
        {"PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_LOG": str(tmp_path / "calls.log"), "AWS_REGION": "eu-west-1"}
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


def test_full_sequence_creates_the_repository_when_missing(fakes: dict[str, str]) -> None:
    fakes.update(FAKE_FAIL_ON="ecr describe-repositories", FAKE_FAIL_STATUS="254")
    result = run(fakes, "genesig-mme", "v1")
    assert result.returncode == 0, result.stderr
    registry = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
    uri = f"{registry}/genesig-mme"
    commit = (
        subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        or "nogit"
    )
    recorded = calls(fakes)
    recorded[3:5] = sorted(recorded[3:5])  # the login pipe's two sides run together
    assert recorded == [
        "aws sts get-caller-identity --query Account --output text",
        "aws ecr describe-repositories --region eu-west-1 --repository-names genesig-mme",
        "aws ecr create-repository --region eu-west-1 --repository-name genesig-mme "
        "--image-scanning-configuration scanOnPush=true",
        "aws ecr get-login-password --region eu-west-1",
        f"docker login --username AWS --password-stdin {registry}",
        f"docker build --platform linux/amd64 --tag {uri}:v1 --tag {uri}:{commit} {REPO}",
        f"docker push {uri}:v1",
        f"docker push {uri}:{commit}",
    ]
    assert result.stdout.strip().splitlines()[-1] == f"{uri}:v1"
    assert "secret-token" not in result.stdout + result.stderr


def test_existing_repository_is_not_created_again_and_tag_defaults_to_latest(fakes: dict[str, str]) -> None:
    result = run(fakes, "genesig-mme")
    assert result.returncode == 0, result.stderr
    assert not any("create-repository" in c for c in calls(fakes))
    assert result.stdout.strip().endswith("genesig-mme:latest")


def test_region_falls_back_to_the_cli_configuration(fakes: dict[str, str]) -> None:
    del fakes["AWS_REGION"]
    result = run(fakes, "genesig-mme")
    assert calls(fakes)[0] == "aws configure get region"
    assert result.returncode == 1 and "no AWS region" in result.stderr


@pytest.mark.parametrize(
    ("fail_on", "status"),
    [
        ("sts get-caller-identity", 255),
        ("get-login-password", 4),
        ("docker login", 5),
        ("docker build", 6),
        ("docker push", 7),
    ],
)
def test_any_failing_step_stops_the_script_with_its_status(fakes: dict[str, str], fail_on: str, status: int) -> None:
    fakes.update(FAKE_FAIL_ON=fail_on, FAKE_FAIL_STATUS=str(status))
    result = run(fakes, "genesig-mme", "v2")
    assert result.returncode == status
    # The login pipe's two sides run together, so compare steps, not log order.
    steps = [
        "sts get-caller-identity",
        "ecr describe-repositories",
        "get-login-password|docker login",
        "docker build",
        "docker push",
    ]

    def step(call: str) -> int:
        return next(i for i, s in enumerate(steps) if any(part in call for part in s.split("|")))

    failing = step(fail_on)
    recorded = calls(fakes)
    assert any(fail_on in c for c in recorded)
    assert all(step(c) <= failing for c in recorded), f"a later step ran after the failure: {recorded}"
    if fail_on == "docker push":
        assert sum("docker push" in c for c in recorded) == 1


@pytest.mark.parametrize("args", [(), ("a", "b", "c"), ("Upper",), ("bad name",), ("ok", "bad tag!")])
def test_bad_arguments_print_usage_and_call_nothing(fakes: dict[str, str], args: tuple[str, ...]) -> None:
    result = run(fakes, *args)
    assert result.returncode == 2
    assert "usage:" in result.stderr
    assert calls(fakes) == []
