"""Typed settings of the pipeline, one default per field: how a cohort is read, how models are trained and
evaluated, and the gate. The command line (its options made from these: ``genesig.cli.options``), ``run-local``,
the step entry points, the training job's hyperparameters and the SageMaker Pipeline definition all read them from
here.

msgspec structs, like the serving settings: every field has a description (the command line's help) and its
constraints, and a bad value is refused with the option's name.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from genesig.artifact import Architecture
from genesig.artifact.manifest import TargetKind
from genesig.errors import DataError

# The ridge penalties (against the mean loss per patient, or per event for Cox, on standardised genes) the inner
# cross-validation chooses from when --l2 is not given (genesig.pipeline.validation).
L2_GRID: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0)

ExpressionScale = Literal["raw", "log"]
GateMetric = Literal["cv_mean", "cv_lower", "test"]
ModelKind = Literal["linear", "mlp"]
CompetitiveMode = Literal["report", "gate", "off"]


def _doc(text: str, **constraints: Any) -> msgspec.Meta:
    return msgspec.Meta(description=text, **constraints)


class CohortSettings(msgspec.Struct, frozen=True, kw_only=True):
    """How the cohort file is read and which signatures it can train."""

    id_column: Annotated[str, _doc("the patient id column")] = "Case_ID"
    event_column: Annotated[str, _doc("the event column: 1 = event (death), 0 = no event")] = "SurvivalStatus"
    time_column: Annotated[str | None, _doc("follow-up time; with it the target is time-to-event (Cox)")] = None
    target: Annotated[TargetKind | None, _doc("binary or time_to_event; default: chosen by the data")] = None
    values: Annotated[
        ExpressionScale,
        _doc(
            "raw: non-negative expression (counts, FPKM, TPM), log1p-transformed by the model; log: already on a log "
            "scale (log2 intensities, microarray log-ratios; negative values allowed), used as given"
        ),
    ] = "raw"
    min_events: Annotated[int, _doc("refuse data with fewer events or non-events than this", ge=2)] = 10
    min_genes: Annotated[int, _doc("skip signatures with fewer of their genes in the data", ge=1)] = 2
    min_coverage: Annotated[
        float, _doc("skip signatures with a smaller share of their genes in the data (0-1)", ge=0, le=1)
    ] = 0.5


class TrainSettings(msgspec.Struct, frozen=True, kw_only=True):
    """How each signature's model is fitted and evaluated."""

    model: Annotated[ModelKind, _doc("linear (ridge logistic or Cox) or mlp (one hidden layer)")] = "linear"
    hidden_units: Annotated[int, _doc("mlp hidden layer size (8-32 is sensible)", ge=1, le=1024)] = 16
    activation: Annotated[Literal["relu", "tanh"], _doc("mlp activation")] = "tanh"
    l2: Annotated[
        Annotated[float, msgspec.Meta(ge=0)] | None,
        _doc(
            "ridge penalty on the weights (against the mean loss per patient, or per event for Cox); none: chosen by "
            "an inner CV nested in each fold from " + ", ".join(f"{v:g}" for v in L2_GRID)
        ),
    ] = None
    max_iter: Annotated[int, _doc("most Newton steps (linear) or L-BFGS iterations (mlp) per fit", ge=1)] = 200
    seed: Annotated[int, _doc("seed of the split, the folds and the mlp's initial weights", ge=0)] = 0
    test_fraction: Annotated[float, _doc("share of patients held out for the test split", ge=0.05, le=0.5)] = 0.2
    cv_folds: Annotated[int, _doc("folds of the repeated stratified cross-validation", ge=2, le=20)] = 5
    cv_repeats: Annotated[int, _doc("repeats of the cross-validation", ge=1, le=100)] = 5

    def architecture(self) -> Architecture:
        if self.model == "linear":
            return Architecture(kind="linear")
        return Architecture(kind="mlp", hidden_units=self.hidden_units, activation=self.activation)


class GateSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Which models are registered: the metric a model must reach, and that it predicts the outcome better than chance
    (the self-contained permutation test, with false-discovery control over the run); whether it also beats random
    gene sets of its size is reported beside the verdict, or gated on when asked."""

    threshold: Annotated[float, _doc("gate threshold on the metric (AUC or C-index)", ge=0, le=1)] = 0.6
    gate_on: Annotated[GateMetric, _doc("cv_mean, cv_lower (the CV interval's lower bound) or test (held-out)")] = (
        "cv_mean"
    )
    fdr: Annotated[
        float,
        _doc(
            "largest Benjamini-Hochberg q over the run's signatures (the false-discovery rate); one signature alone "
            "passes with p at most this",
            gt=0,
            le=1,
        ),
    ] = 0.1
    permutations: Annotated[
        int,
        _doc(
            "outcome permutations in the self-contained null that decides with the threshold, at least this many in "
            "the run and one per signature (0: off, the threshold alone decides)",
            ge=0,
        ),
    ] = 200
    competitive: Annotated[
        CompetitiveMode,
        _doc(
            "whether the signature beats random gene sets of its size: report (beside the verdict), gate (part of "
            "the verdict too) or off"
        ),
    ] = "report"
    random_sets: Annotated[
        int,
        _doc(
            "random gene sets in the competitive test: this many in the run, spread over the signatures' sizes, at "
            "least 20 at each",
            ge=20,
        ),
    ] = 200


# The competitive test's random sets: GateSettings.random_sets in the run, spread over its sizes, at least this many
# at each. Here, with the setting, because PrepareSignatureSet, run-local and the cost plan all deal them so.
MIN_SETS_PER_SIZE = 20


def sets_per_size(sizes: int, random_sets: int) -> int:
    """Random gene sets drawn at each of a run's ``sizes`` competitive sizes: ``random_sets`` in the run, spread
    over the sizes, at least ``MIN_SETS_PER_SIZE`` at each, and even (half in each stratum, so that a stratum of a
    run of ``random_sets`` holds at least half of them)."""
    if sizes <= 0 or random_sets <= 0:
        return 0
    each = max(MIN_SETS_PER_SIZE, math.ceil(random_sets / sizes))
    return each + each % 2


Settings = TypeVar("Settings", CohortSettings, TrainSettings, GateSettings)


# msgspec's words for types, as a user reads them.
_PLAIN = {"`float`": "a number", "`int`": "a whole number", "`str`": "text", "`null`": "nothing"}


def convert(
    values: dict[str, Any], settings_type: type[Settings], *, label: Callable[[str], str] = lambda field: field
) -> Settings:
    """``values`` (strings accepted, as hyperparameters arrive) checked against the settings' types and ranges; a
    bad one is refused in one line that names it with ``label``."""
    try:
        return msgspec.convert(values, type=settings_type, strict=False)
    except msgspec.ValidationError as exc:
        reason, _, where = str(exc).partition(" - at `$.")
        for word, plain in _PLAIN.items():
            reason = reason.replace(word, plain)
        name = label(where.rstrip("`").split(".")[0]) if where else "settings"
        raise DataError(f"{name}: {reason[0].lower() + reason[1:]}") from None


def as_strings(settings: msgspec.Struct) -> dict[str, str]:
    """The settings as SageMaker hyperparameters (every value a string; unset values left out)."""
    return {k: str(v) for k, v in msgspec.structs.asdict(settings).items() if v is not None}
