"""The image's ``train`` entry: SageMaker's training-container contract around the same train step.

SageMaker runs ``docker run IMAGE train``: inputs are in ``/opt/ml/input/data/<channel>``,
hyperparameters (all strings) in ``/opt/ml/input/config/hyperparameters.json``, the instance's name in
``resourceconfig.json``; whatever is in ``/opt/ml/model`` becomes ``model.tar.gz``; a failure's reason goes
to ``/opt/ml/output/failure``.

Two jobs use it. The one-signature pipeline's (a ``prepared`` channel): the artifact's files (manifest +
weights) go into ``/opt/ml/model``, so SageMaker's ``model.tar.gz`` is exactly our artifact format. The
signature-set run's (``cohort`` and ``shards`` channels, one shard per instance): every signature of the
shard is trained and its results uploaded to the ``output_uri`` hyperparameter (see ``signature_set``).
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
from genesig.pipeline.run import RunOptions
from genesig.pipeline.sagemaker.aws import client
from genesig.pipeline.settings import CohortSettings, GateSettings, TrainSettings, convert
from genesig.pipeline.signature_set import host_name, train_shard, upload_results
from genesig.pipeline.steps import PROVISIONAL_VERSION, cross_validate, load_prepared, train_model

logger = logging.getLogger(__name__)
CHANNEL = "prepared"
SET_CHANNELS = ("cohort", "shards")


@dataclass(frozen=True)
class TrainingPaths:
    root: Path = Path("/opt/ml")

    @property
    def channel(self) -> Path:
        return self.input(CHANNEL)

    def input(self, channel: str) -> Path:
        return self.root / "input" / "data" / channel

    @property
    def config(self) -> Path:
        return self.root / "input" / "config"

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
    return {k: json.loads(v) if isinstance(v, str) and v[:1] and v[:1] in '[{"' else v for k, v in raw.items()}


def run_training(paths: TrainingPaths) -> Path:
    """Train from the ``prepared`` channel into ``/opt/ml/model``; returns the model folder.

    The artifact is written as version 1: the RegisterModel job renumbers it to the version its model package gets
    (SageMaker assigns it when the package is created, the only moment it can be done without a race)."""

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


def run_set_training(paths: TrainingPaths) -> list[Any]:
    """This instance's shard of a signature-set run: trained, evaluated, gated and uploaded."""

    hp = _hyperparameters(paths.hyperparameters)
    if not str(hp.get("output_uri", "")).startswith("s3://"):
        raise GenesigError("the signature-set training job needs the output_uri hyperparameter (an s3:// prefix)")

    def label(field: str) -> str:
        return f"hyperparameter {field}"

    options = RunOptions(
        data=paths.input("cohort"),
        cohort=convert(hp, CohortSettings, label=label),
        train=convert(hp, TrainSettings, label=label),
        gate=convert(hp, GateSettings, label=label),
        jobs=0,  # one worker per CPU of the instance
    )
    host = host_name(paths.config)
    with tempfile.TemporaryDirectory(prefix="genesig-shard-") as tmp:
        results = train_shard(paths.input("cohort"), paths.input("shards"), Path(tmp), options, host=host)
        uploaded = upload_results(client("s3"), Path(tmp), results, str(hp["output_uri"]), host)
    counts = {"done": sum(r.evaluated for r in results), "failed": sum(not r.evaluated for r in results)}
    paths.model.mkdir(parents=True, exist_ok=True)
    (paths.model / f"shard-{host}.json").write_text(json.dumps({"host": host, **counts, "files": uploaded}) + "\n")
    logger.info(
        "%s: %d signatures trained (%d failed), %d files uploaded", host, counts["done"], counts["failed"], uploaded
    )
    return results


def main(paths: TrainingPaths | None = None) -> int:
    paths = paths or TrainingPaths()
    try:
        if all(paths.input(c).is_dir() for c in SET_CHANNELS):
            run_set_training(paths)
        else:
            run_training(paths)
        return 0
    except GenesigError as exc:
        paths.failure.parent.mkdir(parents=True, exist_ok=True)
        paths.failure.write_text(exc.message)
        logger.error("training failed: %s", exc.message)
        return 2
