"""The Dockerfile passes hadolint and keeps the MME image's contract."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "Dockerfile").read_text()
FINAL_STAGE = DOCKERFILE.rsplit("\nFROM ", 1)[1]


def tool(name: str) -> str:
    found = shutil.which(name) or str(Path(sys.executable).parent / name)
    assert Path(found).exists(), f"{name} is installed by the dev extra"
    return found


def test_hadolint_passes() -> None:
    result = subprocess.run([tool("hadolint"), "Dockerfile"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_final_stage_contract() -> None:
    assert "com.amazonaws.sagemaker.capabilities.multi-models=true" in FINAL_STAGE
    assert "\nUSER 1000" in FINAL_STAGE, "runs as a non-root user"
    entry = next(line for line in FINAL_STAGE.splitlines() if line.startswith("ENTRYPOINT "))
    cmd = next(line for line in FINAL_STAGE.splitlines() if line.startswith("CMD "))
    assert json.loads(entry.removeprefix("ENTRYPOINT ")) == ["genesig"], "exec form"
    assert json.loads(cmd.removeprefix("CMD ")) == ["serve"], "SageMaker passes `serve`"
    assert "openjdk-17-jre-headless" in FINAL_STAGE and "nginx" in FINAL_STAGE
    for forbidden in ("gcc", "build-essential", "vim", "nano", "pip install"):
        assert forbidden not in FINAL_STAGE, f"{forbidden} does not belong in the runtime stage"


def test_every_env_variable_is_explained() -> None:
    env_block = FINAL_STAGE.split("\nENV ", 1)[1].split("\n\n", 1)[0]
    names = [part.split("=", 1)[0].strip() for part in env_block.replace("\\\n", " ").split() if "=" in part]
    comments = FINAL_STAGE.split("\nENV ", 1)[0].rsplit("\n\n", 1)[1]
    for name in names:
        assert f"# {name}:" in comments, f"ENV {name} has no explanation"


def test_image_installs_pinned_dependencies() -> None:
    lock = (REPO / "container" / "requirements.lock").read_text().splitlines()
    pins = [line for line in lock if line and not line.startswith("#")]
    assert pins and all("==" in line for line in pins)
    names = {line.split("==")[0].lower().replace("_", "-") for line in pins}
    serving = {"multi-model-server", "sagemaker-inference", "aiohttp", "numpy", "msgspec", "safetensors"}
    # The pipeline's processing and training jobs run this image too.
    pipeline_jobs = {"pandas", "scikit-learn", "matplotlib", "pyarrow", "rich", "boto3"}
    assert serving | pipeline_jobs <= names
    assert "torch" not in names, "torch comes from PyTorch's CPU index, not PyPI"
    assert "--requirement container/requirements.lock" in DOCKERFILE
