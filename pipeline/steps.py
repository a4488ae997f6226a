"""The pipeline steps as plain functions on plain data: preprocess, train, evaluate, gate.

Each step also reads and writes a folder (``save_*``/``load_*``) so that the same code runs as
a local step, as ``genesig step ...`` and inside a SageMaker job.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import platform
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import genesig
from genesig.artifact import (
    SCHEMA_VERSION,
    Manifest,
    Preprocessing,
    Signature,
    SignatureModel,
    Training,
    TrainingData,
    read_artifact,
    write_artifact,
)
from genesig.artifact.manifest import TargetKind
from genesig.artifact.model import apply_preprocessing
from genesig.artifact.package import sha256_file
from genesig.errors import DataError
from genesig.pipeline.cohort import Cohort
from genesig.pipeline.evaluation import (
    PREDICTIONS_FILE,
    ArtifactFile,
    CrossValidated,
    Evaluation,
    Fit,
    GateBlock,
    HeldOut,
    Trained,
)
from genesig.pipeline.metrics import discrimination
from genesig.pipeline.model import fit_preprocessing, train
from genesig.pipeline.results import Outcome, SignatureResult
from genesig.pipeline.settings import GateSettings, TrainSettings
from genesig.pipeline.signatures import MatchedSignature
from genesig.pipeline.significance import PermutationNull, decide, permutation_rows
from genesig.pipeline.split import choose_target, split_rows
from genesig.pipeline.validation import (
    CrossValidation,
    choose_penalty,
    cross_validate_rows,
    manifest_stub,
    metric_name,
    output_spec,
)

logger = logging.getLogger(__name__)

PREPARED_FILE = "prepared.json"
GATE_FILE = "gate.json"
# Models are trained as version 1; a registry gives a model its version when it registers it (renumbering it).
PROVISIONAL_VERSION = 1


@dataclass(frozen=True)
class Split:
    """One side of the split: raw values of the signature's genes and the outcome."""

    ids: list[str]
    raw: np.ndarray
    event: np.ndarray
    time: np.ndarray | None


@dataclass(frozen=True)
class Prepared:
    """Output of preprocessing: the signature's genes, a stratified split and the preprocessing fitted on train."""

    name: str
    signature: str
    source: str
    genes: list[str]
    genes_requested: list[str]
    genes_missing: list[str]
    target: TargetKind
    id_column: str
    event_column: str
    time_column: str | None
    fingerprint: str
    seed: int
    train: Split
    test: Split
    preprocessing: Preprocessing


def preprocess(
    cohort: Cohort,
    matched: MatchedSignature,
    *,
    target: TargetKind | None = None,
    settings: TrainSettings | None = None,
) -> Prepared:
    """Select the signature's genes, split stratified by event (seeded), fit preprocessing on the train side."""
    settings = settings or TrainSettings()
    if matched.skip_reason:
        raise DataError(f"signature {matched.signature.name!r} is skipped: {matched.skip_reason}")
    genes = matched.present
    raw = cohort.expression(genes)
    train_rows, test_rows = split_rows(cohort, settings)

    def side(r: np.ndarray) -> Split:
        return Split(
            ids=cohort.ids[r].tolist(),
            raw=raw[r],
            event=cohort.event[r],
            time=None if cohort.time is None else cohort.time[r],
        )

    return Prepared(
        name=matched.artifact_name,
        signature=matched.signature.name,
        source=matched.signature.source,
        genes=genes,
        genes_requested=list(matched.signature.genes),
        genes_missing=matched.missing,
        target=choose_target(cohort, target),
        id_column=cohort.columns.id,
        event_column=cohort.columns.event,
        time_column=cohort.columns.time,
        fingerprint=cohort.fingerprint(genes),
        seed=settings.seed,
        train=side(train_rows),
        test=side(test_rows),
        preprocessing=fit_preprocessing(raw[train_rows], cohort.log1p),
    )


# --- train -------------------------------------------------------------------------------------------


def cross_validate(prepared: Prepared, config: TrainSettings, *, permutations: int = 0) -> CrossValidation:
    """The training split's repeated stratified CV, the penalty nested inside it (``genesig.pipeline.validation``);
    with ``permutations``, the same CV of that many permutations of the patients' rows against the outcome rides in
    the same batch (``CrossValidation.permuted``: this signature's share of the self-contained null)."""
    patients = len(prepared.train.ids)
    permuted_rows = permutation_rows(patients, permutations, prepared.seed, prepared.name)
    observed, *permuted = _cross_validate_orders(
        prepared, config, np.concatenate([np.arange(patients)[None], permuted_rows])
    )
    return replace(observed, permuted=[cv.pooled_mean for cv in permuted])


def _cross_validate_orders(prepared: Prepared, config: TrainSettings, rows: np.ndarray) -> list[CrossValidation]:
    """The training split cross-validated with its patients' rows in each order of ``rows`` against the outcome."""
    side = prepared.train
    return cross_validate_rows(
        side.raw, rows, side.event, side.time, prepared.target, config, prepared.seed,
        log1p=prepared.preprocessing.log1p,
    )  # fmt: skip


def settings_of(manifest: Manifest) -> TrainSettings:
    """The training settings a model was trained with, as far as its manifest records them (what a permutation of its
    cross-validation must repeat)."""
    training = manifest.training
    if training is None:
        raise DataError(f"{manifest.name} v{manifest.version} records no training settings: train it again")
    model = manifest.model
    return TrainSettings(
        model=model.kind,
        hidden_units=model.hidden_units or TrainSettings().hidden_units,
        activation=model.activation or TrainSettings().activation,
        l2=training.l2 if training.l2_chosen_by == "fixed" else None,
        seed=training.seed,
        cv_folds=training.cv_folds,
        cv_repeats=training.cv_repeats,
        max_iter=training.max_iter,
    )


def train_model(prepared: Prepared, config: TrainSettings, version: int, out_dir: Path, *, cv: CrossValidation) -> Path:
    """Fit on the whole training split (the penalty chosen by an inner CV on it, unless fixed) and write the
    artifact, with the CV metrics and how the penalty was chosen, through the contract's writer."""
    train_side = prepared.train
    penalty = choose_penalty(
        train_side.raw, train_side.event, train_side.time, prepared.target, config, prepared.seed,
        log1p=prepared.preprocessing.log1p,
    )  # fmt: skip
    z = apply_preprocessing(prepared.preprocessing, prepared.genes, train_side.raw)
    weights = train(z, train_side.event, train_side.time, prepared.target, config, l2=penalty.l2)
    stub = manifest_stub(prepared.genes, prepared.target, prepared.preprocessing, config)
    provisional = SignatureModel(stub, weights)
    # Risk groups split at the training split's median output.
    cutpoint = float(np.median(provisional.predict(train_side.raw).values))
    metric = cv.metric
    low, high = cv.interval
    train_metric = discrimination(
        event=train_side.event,
        time=train_side.time if prepared.target == "time_to_event" else None,
        risk_score=provisional.linear_predictor(train_side.raw),
    )
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        name=prepared.name,
        version=version,
        signature=Signature(
            name=prepared.signature,
            source=prepared.source,
            genes_requested=prepared.genes_requested,
            genes_missing=prepared.genes_missing,
            coverage=len(prepared.genes) / len(prepared.genes_requested),
        ),
        genes=prepared.genes,
        id_column=prepared.id_column,
        target=prepared.target,
        model=config.architecture(),
        preprocessing=prepared.preprocessing,
        output=output_spec(prepared.target, [cutpoint]),
        metrics={
            f"cv_{metric}_mean": cv.mean,
            f"cv_{metric}_pooled": cv.pooled_mean,
            f"cv_{metric}_lower": low,
            f"cv_{metric}_upper": high,
            f"train_{metric}": train_metric,
        },
        training_data=TrainingData(
            fingerprint=prepared.fingerprint,
            n_rows=len(train_side.ids),
            n_events=int(train_side.event.sum()),
            event_column=prepared.event_column,
            time_column=prepared.time_column,
        ),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        versions={
            "genesig": genesig.__version__,
            "numpy": np.__version__,
            **(
                {"scipy": importlib.metadata.version("scipy")}
                if config.model == "linear"
                else {"torch": importlib.metadata.version("torch")}
            ),
            "python": platform.python_version(),
        },
        training=Training(
            l2=penalty.l2,
            l2_chosen_by=penalty.chosen_by,
            l2_candidates=list(penalty.candidates),
            inner_cv_log_likelihood=list(penalty.inner_log_likelihood),
            inner_folds=penalty.inner_folds,
            cv_folds=cv.folds,
            cv_repeats=cv.repeats,
            seed=prepared.seed,
            max_iter=config.max_iter,
        ),
    )
    return write_artifact(manifest, weights, out_dir)


# --- evaluate -----------------------------------------------------------------------------------------


def risk_group_summary(
    groups: list[str], event: np.ndarray, time: np.ndarray | None, values: np.ndarray
) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for label in dict.fromkeys(groups):
        mask = np.array([g == label for g in groups])
        entry: dict[str, Any] = {
            "patients": int(mask.sum()),
            "events": int(event[mask].sum()),
            "observed_event_rate": float(event[mask].mean()),
            "mean_output": float(values[mask].mean()),
        }
        if time is not None:
            entry["median_time"] = float(np.median(time[mask]))
        summary[label] = entry
    return summary


def evaluate(
    prepared: Prepared,
    artifact: Path,
    out_dir: Path,
    gate_settings: GateSettings,
    *,
    run_decides: bool = False,
    draw: bool = True,
) -> Evaluation:
    """Score the held-out split through the serving code path, gate the model, and write ``evaluation.json`` (the
    gate's verdict under ``gate``, the artifact's file and sha256 under ``artifact``), ``gate.json`` and the
    report. run-local and the pipeline's EvaluateModel job both come here. ``run_decides``: a run's false-discovery
    control decides later whether a model that clears the threshold passes (run-local and the signature-set run with
    the null on); one signature evaluated alone is gated on the threshold."""
    from genesig.pipeline.report import write_report  # matplotlib: imported when a report is drawn

    model = read_artifact(artifact)
    if model.genes != prepared.genes:
        raise DataError(f"artifact {artifact.name} uses genes {model.genes}, the data split {prepared.genes}")
    test = prepared.test
    predictions = model.predict(test.raw)
    risk = model.linear_predictor(test.raw)
    metric = metric_name(prepared.target)
    test_time = test.time if prepared.target == "time_to_event" else None
    test_value = discrimination(event=test.event, time=test_time, risk_score=risk)
    m = model.manifest.metrics
    training = model.manifest.training
    quality = {metric: {"value": test_value}, f"cv_{metric}_mean": {"value": m[f"cv_{metric}_mean"]}}
    evaluation = Evaluation(
        signature=prepared.signature,
        name=prepared.name,
        version=model.manifest.version,
        target=prepared.target,
        metric=metric,
        genes=prepared.genes,
        output=model.manifest.output.name,
        event_column=prepared.event_column,
        time_column=prepared.time_column,
        cross_validation=CrossValidated(
            mean=m[f"cv_{metric}_mean"],
            interval=(m[f"cv_{metric}_lower"], m[f"cv_{metric}_upper"]),
            pooled=m.get(f"cv_{metric}_pooled"),
        ),
        test=HeldOut(value=test_value, patients=len(test.ids), events=int(test.event.sum())),
        train=Trained(value=m[f"train_{metric}"]),
        model=Fit(
            l2=training.l2 if training else None,
            l2_chosen_by=training.l2_chosen_by if training else None,
            coverage=model.manifest.signature.coverage,
        ),
        risk_groups=risk_group_summary(predictions.groups, test.event, test.time, predictions.values),
        artifact=ArtifactFile(file=artifact.name, sha256=sha256_file(artifact)),
        binary_classification_metrics=quality if prepared.target == "binary" else None,
        survival_metrics=quality if prepared.target != "binary" else None,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = {
        prepared.id_column: test.ids,
        model.manifest.output.name: predictions.values,
        "risk_group": predictions.groups,
        prepared.event_column: test.event.astype(int),
    }
    if test.time is not None and prepared.time_column:
        columns[prepared.time_column] = test.time
    table = pd.DataFrame(columns)
    table.to_csv(out_dir / PREDICTIONS_FILE, index=False, float_format="%.17g")
    if run_decides:
        # The run decides (q over every signature), later: until then the verdict is the threshold's, not final.
        verdict = gate(evaluation, gate_settings)
        evaluation.gate = GateBlock(**asdict(verdict), final=False)
    else:
        if gate_settings.permutations:
            draws = permutation_draws(prepared, settings_of(model.manifest), gate_settings.permutations)
            evaluation.significance = lone_significance(evaluation, draws)
        verdict, evaluation.gate = lone_verdict(evaluation, gate_settings)
    write_gate(verdict, out_dir, evaluation)
    # ``draw``: the report is drawn now (else by whoever decides the verdict: run-local draws it once, after the run).
    if draw:
        write_report(evaluation, table, out_dir)
    evaluation.write(out_dir)
    return evaluation


def permutation_draws(prepared: Prepared, config: TrainSettings, count: int) -> list[float]:
    """The pooled out-of-fold metric of ``count`` permutations of the training patients' rows against the outcome,
    each cross-validated as the model was (its own folds, preprocessing and penalty)."""
    rows = permutation_rows(len(prepared.train.ids), count, prepared.seed, prepared.name)
    return [cv.pooled_mean for cv in _cross_validate_orders(prepared, config, rows)]


def lone_significance(evaluation: Evaluation, draws: list[float]) -> dict[str, Any]:
    """One signature's self-contained test against its own permutations (``genesig step evaluate``, the
    one-signature pipeline): the ``significance`` block, q and the verdict filled in by :func:`lone_verdict`."""
    genes = len(evaluation.genes)
    null = PermutationNull([(genes, v) for v in draws])
    observed = evaluation.cross_validation.pooled
    return {
        "statistic": f"pooled out-of-fold {evaluation.metric}",
        "observed": observed,
        "self_contained": {
            "p_value": null.p_value(observed, genes) if observed is not None else None,
            "q_value": None,
            "permutations": null.draws,
            "null": null.describe(1),
        },
        "competitive": {"status": "off", "null": LONE_COMPETITIVE},
        "coverage": evaluation.model.coverage,
    }


# One signature evaluated alone has only its own genes: random gene sets of the cohort need a run over the cohort.
LONE_COMPETITIVE = "not computed for one signature alone (run-local or the signature-set run compute it)"


def lone_verdict(evaluation: Evaluation, settings: GateSettings) -> tuple[GateResult, GateBlock]:
    """The verdict on one signature alone: no run whose false discoveries could be controlled, so its self-contained
    p decides with the threshold (its q is its p: Benjamini-Hochberg over one); without a p (``--permutations 0``)
    the threshold alone. Returns the threshold's part (``gate.json``) and the ``gate`` block of the evaluation."""
    threshold = gate(evaluation, settings)
    significance = evaluation.significance or {}
    contained = significance.get("self_contained") or {}
    row = SignatureResult(
        signature=evaluation.signature,
        artifact_name=evaluation.name,
        genes=list(evaluation.genes),
        missing_genes=[],
        outcome=Outcome.PASSED if threshold.passed else Outcome.BELOW_THRESHOLD,
        metric=evaluation.metric,
        cv_pooled=evaluation.cross_validation.pooled,
        threshold_passed=threshold.passed,
        threshold_reason=threshold.reason,
        p_value=contained.get("p_value") if settings.permutations else None,
        coverage=evaluation.model.coverage,
    )
    [verdict] = decide([row], settings)
    assert verdict is not None, "an evaluated row always has a verdict"
    outcome = {"passed": verdict.passed, "outcome": str(verdict.outcome), "reason": verdict.reason}
    if significance:
        contained["q_value"] = verdict.q_value
        significance["verdict"] = outcome
    return threshold, GateBlock(**{**asdict(threshold), **outcome}, final=True)


# --- gate ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GateResult:
    passed: bool
    metric: str
    value: float
    threshold: float
    reason: str
    details: dict[str, Any] = field(default_factory=dict)


def gate(evaluation: Evaluation, settings: GateSettings) -> GateResult:
    """Pass when the chosen metric clears the threshold; the reason says why either way."""
    threshold, on = settings.threshold, settings.gate_on
    metric = evaluation.metric
    values = {
        "cv_mean": evaluation.cross_validation.mean,
        "cv_lower": evaluation.cross_validation.interval[0],
        "test": evaluation.test.value,
    }
    value = float(values[on])
    label = {
        "cv_mean": f"cross-validated mean {metric}",
        "cv_lower": f"lower CV bound of {metric}",
        "test": f"held-out {metric}",
    }[on]
    passed = value >= threshold
    reason = f"{label} {value:.3f} {'>=' if passed else '<'} threshold {threshold:.3f}"
    return GateResult(passed, f"{on}:{metric}", value, threshold, reason, details={"all": values})


def write_gate(threshold: GateResult, out_dir: Path, evaluation: Evaluation) -> Path:
    """``gate.json`` beside the evaluation: what the gate saw (the threshold's part, and the significance when there
    is one) and what it decided (run-local and ``genesig step gate``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / GATE_FILE
    decided = evaluation.decided
    doc: dict[str, Any] = {
        **asdict(threshold), "passed": decided.passed, "reason": decided.reason, "final": decided.final,
    }  # fmt: skip
    if decided.outcome is not None:
        doc["outcome"] = decided.outcome
    if evaluation.significance:
        doc["significance"] = evaluation.significance
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


# --- folders ------------------------------------------------------------------------------------------


def save_prepared(prepared: Prepared, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    for label, side in (("train", prepared.train), ("test", prepared.test)):
        frame = pd.DataFrame(side.raw, columns=prepared.genes)
        frame.insert(0, prepared.id_column, side.ids)
        frame[prepared.event_column] = side.event.astype(int)
        if side.time is not None and prepared.time_column:
            frame[prepared.time_column] = side.time
        frame.to_csv(out_dir / f"{label}.csv", index=False, float_format="%.17g")
    meta = {k: v for k, v in asdict(prepared).items() if k not in ("train", "test", "preprocessing")}
    meta["preprocessing"] = {
        "log1p": prepared.preprocessing.log1p,
        "center": prepared.preprocessing.center,
        "scale": prepared.preprocessing.scale,
    }
    (out_dir / PREPARED_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return out_dir


def load_prepared(in_dir: Path) -> Prepared:
    path = in_dir / PREPARED_FILE
    if not path.is_file():
        raise DataError(f"{in_dir} has no {PREPARED_FILE}: run the preprocess step first")
    meta = json.loads(path.read_text())
    sides = {}
    for label in ("train", "test"):
        frame = pd.read_csv(in_dir / f"{label}.csv", dtype={meta["id_column"]: str}, float_precision="round_trip")
        sides[label] = Split(
            ids=frame[meta["id_column"]].tolist(),
            raw=frame[meta["genes"]].to_numpy(dtype=np.float64),
            event=frame[meta["event_column"]].to_numpy() == 1,
            time=frame[meta["time_column"]].to_numpy(dtype=np.float64) if meta["time_column"] else None,
        )
    meta["preprocessing"] = Preprocessing(**meta["preprocessing"])
    return Prepared(**meta, train=sides["train"], test=sides["test"])
