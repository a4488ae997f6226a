"""The Dockerfile passes hadolint, keeps the MME image's contract, and installs exactly the locked dependencies."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "Dockerfile").read_text()
LOCKS = REPO / "container" / "requirements"


def stage(name: str) -> str:
    """The text of one stage, from its FROM line to the next FROM."""
    match = re.search(rf"^FROM \S+ AS {name}\n(.*?)(?=^FROM |\Z)", DOCKERFILE, re.S | re.M)
    assert match, f"no stage {name}"
    return match.group(1)


def tool(name: str) -> str:
    found = shutil.which(name) or str(Path(sys.executable).parent / name)
    assert Path(found).exists(), f"{name} is installed by the dev extra"
    return found


def locked(lock: str) -> dict[str, str]:
    """Package name -> pinned version; fails unless every requirement is pinned with at least one sha256."""
    text = (LOCKS / lock).read_text()
    entries = re.findall(r"^([A-Za-z0-9._-]+)==(\S+)((?: \\\n\s+--hash=sha256:[0-9a-f]{64})+)", text, re.M)
    requirements = [line for line in text.splitlines() if line and not line[0].isspace() and not line[0] == "#"]
    assert len(entries) == len(requirements), f"{lock}: every requirement is pinned with hashes"
    return {canonicalize_name(name): version for name, version, _ in entries}


def test_hadolint_passes() -> None:
    result = subprocess.run([tool("hadolint"), "Dockerfile"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_serving_stage_contract() -> None:
    serve = stage("serve")
    assert DOCKERFILE.rstrip().endswith('CMD ["serve"]'), "the serving image is the default (last) target"
    assert "com.amazonaws.sagemaker.capabilities.multi-models=true" in serve
    assert "\nUSER 1000" in serve, "runs as a non-root user"
    entry = next(line for line in serve.splitlines() if line.startswith("ENTRYPOINT "))
    cmd = next(line for line in serve.splitlines() if line.startswith("CMD "))
    assert json.loads(entry.removeprefix("ENTRYPOINT ")) == ["genesig"], "exec form"
    assert json.loads(cmd.removeprefix("CMD ")) == ["serve"], "SageMaker passes `serve`"
    assert "COPY --from=jre-build /opt/java /opt/java" in serve and "nginx-light" in serve
    assert "COPY --from=serve-build /opt/venv" in serve, "no torch: the serving venv is built without it"
    for forbidden in ("gcc", "build-essential", "openjdk", "vim", "nano", "pip install", "pip-install"):
        assert forbidden not in serve, f"{forbidden} does not belong in the serving image"


def test_training_stage_contract() -> None:
    train = stage("train")
    assert "COPY --from=train-build /opt/venv" in train
    assert 'ENTRYPOINT ["genesig"]' in train and 'CMD ["train"]' in train, "SageMaker runs `docker run IMAGE train`"
    assert "\nUSER" not in train, "SageMaker mounts /opt/ml for root"


@pytest.mark.parametrize("name", ["serve", "train"])
def test_every_env_variable_is_explained(name: str) -> None:
    text = stage(name)
    env_block = text.split("\nENV ", 1)[1].split("\n\n", 1)[0]
    names = [part.split("=", 1)[0].strip() for part in env_block.replace("\\\n", " ").split() if "=" in part]
    comments = text.split("\nENV ", 1)[0].rsplit("\n\n", 1)[1]
    for variable in names:
        assert f"# {variable}:" in comments, f"ENV {variable} has no explanation"


def test_installs_are_hash_checked_with_pinned_build_tools() -> None:
    assert "--require-hashes --requirement /locks/build.lock" in DOCKERFILE
    assert "--require-hashes --no-build-isolation --requirement /locks/serve.lock" in DOCKERFILE
    assert "--require-hashes --no-build-isolation --requirement /locks/train.lock" in DOCKERFILE
    build = locked("build.lock")
    assert set(build) == {"pip", "setuptools"}
    project_build = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
    assert all(Requirement(r).specifier.contains(build["setuptools"]) for r in project_build)


def _extra(*names: str) -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    for extra in names:
        requirements += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return requirements


@pytest.mark.parametrize(("lock", "extras"), [("serve.lock", ("serve",)), ("train.lock", ("train", "aws"))])
def test_locks_satisfy_pyproject(lock: str, extras: tuple[str, ...]) -> None:
    """A lock that drifted from pyproject.toml (scripts/lock.sh not re-run) fails here."""
    pins = locked(lock)
    for requirement in _extra(*extras):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{lock} lacks {requirement} (run scripts/lock.sh)"
        version = pins[name].split("+", 1)[0]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{lock}: {name}=={pins[name]} vs {requirement}"
        )


def test_torch_only_in_the_training_image_and_only_its_cpu_build() -> None:
    assert "torch" not in locked("serve.lock")
    train = locked("train.lock")
    assert train["torch"].endswith("+cpu"), "PyPI's default Linux wheel carries several GB of CUDA"
    assert not any(name.startswith("nvidia") for name in train)


def test_build_context_is_limited_to_what_the_build_copies() -> None:
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") - 0] == "*", "everything is excluded first"
    allowed = {line[1:] for line in ignore if line.startswith("!")}
    copied = set(re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE, re.M))
    sources = {part.rstrip("/") for line in copied for part in line.split()}
    for source in sources:
        assert any(source == a.rstrip("/") or source.startswith(a.rstrip("/") + "/") for a in allowed), source
