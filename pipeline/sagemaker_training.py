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
from genesig.errors import DataError, GenesigError

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


def run_training(paths: TrainingPaths, *, version: int | None = None) -> Path:
    """Train from the ``prepared`` channel into ``/opt/ml/model``; returns the model folder."""
    from genesig.pipeline import aws
    from genesig.pipeline.model import TrainConfig
    from genesig.pipeline.steps import cross_validate, load_prepared, train_model

    hp = _hyperparameters(paths.hyperparameters)
    prepared = load_prepared(paths.channel)
    try:
        config = TrainConfig(
            model=hp.get("model", "linear"),
            hidden_units=int(hp.get("hidden_units", 16)),
            l2=float(hp.get("l2", 0.1)),
            seed=int(hp.get("seed", 0)),
        )
        repeats = int(hp.get("cv_repeats", 5))
    except (TypeError, ValueError) as exc:
        raise DataError(f"invalid hyperparameter: {exc}") from None
    if version is None:
        # The artifact carries the version its model package will get in the registry.
        version = aws.next_package_version(aws.client("sagemaker"), aws.group_name(prepared.name))
    with tempfile.TemporaryDirectory() as tmp:
        artifact = train_model(
            prepared, config, version, Path(tmp), cv=cross_validate(prepared, config, repeats=repeats)
        )
        extracted = extract_artifact(artifact, Path(tmp) / "extracted")
        paths.model.mkdir(parents=True, exist_ok=True)
        for item in extracted.iterdir():
            shutil.copyfile(item, paths.model / item.name)
    logger.info("trained %s version %d into %s", prepared.name, version, paths.model)
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
