"""The image's `train` entry under SageMaker's training-container contract (/opt/ml in and out)."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

from genesig.artifact import read_artifact
from genesig.pipeline.cohort import read_cohort
from genesig.pipeline.signatures import default_signatures, match
from genesig.pipeline.steps import preprocess, save_prepared
from genesig.pipeline.synthetic import SyntheticSpec, write_synthetic_cohort


def opt_ml(tmp_path: Path, hyperparameters: dict[str, str], signature: str = "metagene_19") -> Path:
    root = tmp_path / "opt-ml"
    data = write_synthetic_cohort(tmp_path / "c.csv", default_signatures(), SyntheticSpec(seed=5))
    cohort = read_cohort(data)
    chosen = next(s for s in default_signatures() if s.name == signature)
    save_prepared(preprocess(cohort, match(chosen, cohort.candidate_genes(), 2)), root / "input/data/prepared")
    (root / "input/config").mkdir(parents=True)
    (root / "input/config/hyperparameters.json").write_text(json.dumps(hyperparameters))
    return root


def train(root: Path) -> subprocess.CompletedProcess[str]:
    """No AWS: the version is assigned later, by the RegisterModel job."""
    return subprocess.run(
        [sys.executable, "-m", "genesig.cli", "train", "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "HOME": str(root)},
    )


def test_training_job_writes_an_artifact_that_sagemaker_packs_as_ours(tmp_path: Path) -> None:
    root = opt_ml(tmp_path, {"model": "linear", "cv_repeats": "2", "l2": "0.5"})
    result = train(root)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in (root / "model").iterdir()) == ["genesig-model.json", "weights.safetensors"]
    # SageMaker tars /opt/ml/model into model.tar.gz: that file is a valid artifact as it stands.
    packed = tmp_path / "model.tar.gz"
    with tarfile.open(packed, "w:gz") as tar:
        for item in (root / "model").iterdir():
            tar.add(item, arcname=item.name)
    manifest = read_artifact(packed).manifest
    assert (manifest.name, manifest.version) == ("metagene_19", 1), "provisional: RegisterModel renumbers it"


def test_a_failed_training_job_says_why_in_the_failure_file(tmp_path: Path) -> None:
    root = tmp_path / "opt-ml"
    result = train(root)
    assert result.returncode == 2
    assert "run the preprocess step first" in (root / "output/failure").read_text()


def test_a_bad_hyperparameter_is_named_in_the_failure_file(tmp_path: Path) -> None:
    root = opt_ml(tmp_path, {"cv_repeats": "many"})
    assert train(root).returncode == 2
    assert (root / "output/failure").read_text() == "hyperparameter cv_repeats: expected a whole number, got text"
