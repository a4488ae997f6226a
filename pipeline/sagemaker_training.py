"""The image's ``train`` entry: SageMaker's training-container contract around the same train step.

SageMaker runs ``docker run IMAGE train``: inputs are in ``/opt/ml/input/data/<channel>``,
hyperparameters (all strings) in ``/opt/ml/input/config/hyperparameters.json``; whatever is in
``/opt/ml/model`` becomes ``model.tar.gz``; a failure's reason goes to ``/opt/ml/output/failure``.
We write the artifact's files (manifest + weights) into ``/opt/ml/model``, so SageMaker's
``model.tar.gz`` is exactly our artifact format.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genesig.artifact import extract_artifact
from genesig.errors import GenesigError

logger = logging.getLogger(__name__)
CHANNEL = "prepared"


@dataclass(frozen=True)
class TrainingPaths:
    root: Path = Path("/opt/ml")

    @property
    def channel(self) -> Path:
        return self.root / "input" / "data" / CHANNEL

    @property
    def hyperparameters(self) -> Path:
        return self.root / "input" / "config" / "hyperparameters.json"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def failure(self) -> Path:
        return self.root / "output" / "failure"


def _hyperparameters(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    raw = json.loads(path.read_text())
    # SageMaker passes every value as a string (JSON-encoded by some SDKs).
    return {k: json.loads(v) if isinstance(v, str) and v[:1] in '[{"' else v for k, v in raw.items()}


def run_training(paths: TrainingPaths) -> Path:
    """Train from the ``prepared`` channel into ``/opt/ml/model``; returns the model folder.

    The artifact is written as version 1: the RegisterModel job renumbers it to the version its model package gets
    (SageMaker assigns it when the package is created, the only moment it can be done without a race)."""
    from genesig.pipeline.settings import TrainSettings, convert
    from genesig.pipeline.steps import PROVISIONAL_VERSION, cross_validate, load_prepared, train_model

    config = convert(_hyperparameters(paths.hyperparameters), TrainSettings, label=lambda f: f"hyperparameter {f}")
    prepared = load_prepared(paths.channel)
    with tempfile.TemporaryDirectory() as tmp:
        artifact = train_model(prepared, config, PROVISIONAL_VERSION, Path(tmp), cv=cross_validate(prepared, config))
        extracted = extract_artifact(artifact, Path(tmp) / "extracted")
        paths.model.mkdir(parents=True, exist_ok=True)
        for item in extracted.iterdir():
            shutil.copyfile(item, paths.model / item.name)
    logger.info("trained %s into %s", prepared.name, paths.model)
    return paths.model


def main(paths: TrainingPaths | None = None) -> int:
    paths = paths or TrainingPaths()
    try:
        run_training(paths)
        return 0
    except GenesigError as exc:
        paths.failure.parent.mkdir(parents=True, exist_ok=True)
        paths.failure.write_text(exc.message)
        logger.error("training failed: %s", exc.message)
        return 2
