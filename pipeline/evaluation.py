"""``evaluation.json``, typed: what the evaluate step measured of one model (cross-validated, held-out and training
metric, the fit, risk groups), where its files are, the gate's verdict (the threshold's, until the run decides) and,
once a run has decided, both tests (``significance``). run-local, the set run, the one-signature steps, the report and
both registries read and write it through :class:`Evaluation` only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from genesig.artifact.manifest import TargetKind
from genesig.errors import DataError

EVALUATION_FILE = "evaluation.json"
PREDICTIONS_FILE = "predictions.csv"
REPORT_FILE = "report.png"
# The parts a registered package records as its metrics (the local registry's ``metrics``; SageMaker's ModelMetrics
# point at the whole file).
REGISTERED_METRICS = ("metric", "cross_validation", "test", "risk_groups", "significance")


class CrossValidated(msgspec.Struct):
    mean: float
    interval: tuple[float, float]
    # The out-of-fold scores pooled over each repeat's folds, scored once (what the run's tests compare); None in
    # artifacts trained before it was recorded.
    pooled: float | None = None


class HeldOut(msgspec.Struct):
    value: float
    patients: int
    events: int


class Trained(msgspec.Struct):
    value: float


class Fit(msgspec.Struct):
    """How the model was fitted and how much of the signature the data had (also in the manifest)."""

    l2: float | None = None
    l2_chosen_by: str | None = None
    coverage: float | None = None


class ArtifactFile(msgspec.Struct):
    file: str
    sha256: str


class GateBlock(msgspec.Struct):
    """The gate's verdict: the threshold's part (metric, value, threshold) and, once ``final``, the run's."""

    passed: bool
    reason: str
    metric: str = ""
    value: float | None = None
    threshold: float | None = None
    details: dict[str, Any] = {}
    final: bool = False
    outcome: str | None = None


class Evaluation(msgspec.Struct):
    signature: str
    name: str
    version: int
    target: TargetKind
    metric: str
    genes: list[str]
    # The columns of predictions.csv (the report is drawn from it).
    output: str
    event_column: str
    time_column: str | None
    cross_validation: CrossValidated
    test: HeldOut
    train: Trained
    model: Fit
    risk_groups: dict[str, Any]
    artifact: ArtifactFile
    predictions: str = PREDICTIONS_FILE
    # The threshold's verdict until a run decides (``final``), then the run's; None only while being evaluated.
    gate: GateBlock | None = None
    report: str = REPORT_FILE
    # The shape SageMaker's model registry reads as model-quality statistics (one of the two, by target).
    binary_classification_metrics: dict[str, Any] | None = None
    survival_metrics: dict[str, Any] | None = None
    # Both tests and the run's verdict, once decided (or the self-contained test of one signature alone).
    significance: dict[str, Any] | None = None

    @property
    def decided(self) -> GateBlock:
        """The gate's verdict (every evaluation written has one)."""
        if self.gate is None:
            raise DataError(f"the evaluation of {self.name} has no verdict: run the evaluate step again")
        return self.gate

    def registered_metrics(self) -> dict[str, Any]:
        doc = msgspec.to_builtins(self)
        return {k: doc[k] for k in REGISTERED_METRICS if k in doc}

    def to_json(self) -> bytes:
        return msgspec.json.format(msgspec.json.encode(self), indent=2) + b"\n"

    def write(self, folder: Path) -> Path:
        path = folder / EVALUATION_FILE
        path.write_bytes(self.to_json())
        return path

    @classmethod
    def read(cls, path: Path, label: str = "") -> Evaluation:
        """``evaluation.json`` (or the folder holding it); anything else is one line naming it (after ``label``,
        e.g. the option that named it)."""
        file = path / EVALUATION_FILE if path.is_dir() else path
        try:
            return msgspec.json.decode(file.read_bytes(), type=cls)
        except FileNotFoundError:
            raise DataError(f"{label}{file}: no such file (the evaluate step's {EVALUATION_FILE})") from None
        except msgspec.ValidationError as exc:  # a DecodeError too: first
            raise DataError(f"{label}{file}: not an evaluation written by the evaluate step ({exc})") from None
        except msgspec.DecodeError as exc:
            raise DataError(f"{label}{file}: not valid JSON ({exc}); run the evaluate step again") from None
