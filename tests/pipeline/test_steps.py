"""Steps on the seed cohort and synthetic cohorts: splits, train-only preprocessing, own-gene evaluation, gate."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import msgspec
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from genesig.artifact import read_artifact
from genesig.errors import DataError
from genesig.pipeline.cohort import read_cohort
from genesig.pipeline.evaluation import EVALUATION_FILE, Evaluation
from genesig.pipeline.settings import L2_GRID, GateSettings, TrainSettings
from genesig.pipeline.signatures import default_signatures, match, select
from genesig.pipeline.steps import (
    cross_validate,
    evaluate,
    gate,
    load_prepared,
    preprocess,
    save_prepared,
    train_model,
)
from tests.evaluations import an_evaluation

FAST = TrainSettings(cv_repeats=2)


def prepared_for(path: Path, name: str, seed: int = 0):  # type: ignore[no-untyped-def]
    cohort = read_cohort(path)
    signature = next(s for s in default_signatures() if s.name == name)
    return cohort, preprocess(cohort, match(signature, cohort.candidate_genes(), 2), settings=TrainSettings(seed=seed))


def test_split_is_stratified_seeded_and_disjoint(seed_cohort: Path) -> None:
    _, a = prepared_for(seed_cohort, "metagene_19", seed=3)
    _, b = prepared_for(seed_cohort, "metagene_19", seed=3)
    assert a.train.ids == b.train.ids and not set(a.train.ids) & set(a.test.ids)
    assert len(a.train.ids) + len(a.test.ids) == 119
    rates = (a.train.event.mean(), a.test.event.mean())
    assert abs(rates[0] - rates[1]) < 0.05, "stratified by event"


def test_preprocessing_is_fitted_on_the_training_split_only(seed_cohort: Path) -> None:
    _, prepared = prepared_for(seed_cohort, "metagene_19")
    logged = np.log1p(prepared.train.raw)
    np.testing.assert_allclose(prepared.preprocessing.center, logged.mean(axis=0))
    everyone = np.log1p(np.vstack([prepared.train.raw, prepared.test.raw]))
    assert not np.allclose(prepared.preprocessing.center, everyone.mean(axis=0))


def test_evaluation_uses_the_signatures_own_genes_and_scikit_learn_agrees(seed_cohort: Path, tmp_path: Path) -> None:
    for name in ("metagene_19", "metagene_4", "ALL"):
        _, prepared = prepared_for(seed_cohort, name)
        config = FAST
        artifact = train_model(prepared, config, 1, tmp_path / name, cv=cross_validate(prepared, config))
        evaluation = evaluate(prepared, artifact, tmp_path / name / "eval", GateSettings())
        model = read_artifact(artifact)
        expected_genes = list(next(s for s in default_signatures() if s.name == name).genes)
        assert model.genes == expected_genes == evaluation.genes
        # An independent computation on the same predictions of the artifact (the serving code path).
        reference = roc_auc_score(prepared.test.event, model.predict(prepared.test.raw).values)
        assert evaluation.test.value == pytest.approx(reference, abs=1e-12)
        on_disk = json.loads((tmp_path / name / "eval" / EVALUATION_FILE).read_text())
        assert on_disk["cross_validation"]["mean"] == model.manifest.metrics["cv_auc_mean"]
        assert (tmp_path / name / "eval" / "report.png").stat().st_size > 5000


def test_evaluation_never_reads_other_genes(seed_cohort: Path, tmp_path: Path) -> None:
    text = seed_cohort.read_text().splitlines()
    header = text[0].split(",")
    vim = header.index("VIM")
    broken = [text[0]] + [
        ",".join("oops" if i == vim else v for i, v in enumerate(line.split(","))) for line in text[1:]
    ]
    path = tmp_path / "broken.csv"
    path.write_text("\n".join(broken))
    _, prepared = prepared_for(path, "metagene_19")  # VIM is not in metagene_19
    assert prepared.genes == ["LRIG1", "HPGD", "GDF15"]
    with pytest.raises(DataError, match="column VIM has non-numeric values"):
        prepared_for(path, "metagene_3")


def test_manifest_carries_preprocessing_fingerprint_and_metrics(synthetic_csv: Path, tmp_path: Path) -> None:
    cohort, prepared = prepared_for(synthetic_csv, "metagene_19")
    config = FAST
    manifest = read_artifact(train_model(prepared, config, 4, tmp_path, cv=cross_validate(prepared, config))).manifest
    assert manifest.name == "metagene_19" and manifest.version == 4
    assert manifest.preprocessing == prepared.preprocessing
    assert manifest.training_data.fingerprint == cohort.fingerprint(["LRIG1", "HPGD", "GDF15"])
    assert {"cv_auc_mean", "cv_auc_lower", "cv_auc_upper", "train_auc"} <= set(manifest.metrics)
    assert manifest.output.risk_groups.labels == ["low", "high"]
    assert manifest.signature.coverage == 1.0


def test_the_shipped_models_penalty_and_how_it_was_chosen_are_in_the_manifest(
    synthetic_csv: Path, tmp_path: Path
) -> None:
    _, prepared = prepared_for(synthetic_csv, "metagene_19")
    tuned = msgspec.structs.replace(FAST, l2=None)
    cv = cross_validate(prepared, tuned)
    training = read_artifact(train_model(prepared, tuned, 1, tmp_path / "tuned", cv=cv)).manifest.training
    assert training is not None and training.l2_chosen_by == "inner_cv" and training.inner_folds == 3
    assert training.l2_candidates == sorted(L2_GRID) and training.l2 in L2_GRID
    best = max(training.inner_cv_log_likelihood)
    assert training.inner_cv_log_likelihood[training.l2_candidates.index(training.l2)] == best
    assert (training.cv_folds, training.cv_repeats, training.seed) == (cv.folds, cv.repeats, prepared.seed)
    assert len(cv.penalties) == len(cv.values) and set(cv.penalties) <= set(L2_GRID)
    fixed = msgspec.structs.replace(FAST, l2=0.25)
    manifest = read_artifact(train_model(prepared, fixed, 1, tmp_path / "fixed", cv=cross_validate(prepared, fixed)))
    assert manifest.manifest.training is not None
    assert (manifest.manifest.training.l2, manifest.manifest.training.l2_chosen_by) == (0.25, "fixed")


def test_prepared_folder_round_trip(synthetic_csv: Path, tmp_path: Path) -> None:
    _, prepared = prepared_for(synthetic_csv, "metagene_10")
    loaded = load_prepared(save_prepared(prepared, tmp_path / "prepared"))
    assert loaded.genes == prepared.genes and loaded.train.ids == prepared.train.ids
    np.testing.assert_array_equal(loaded.test.raw, prepared.test.raw)
    assert loaded.preprocessing == prepared.preprocessing


def test_time_to_event_target_from_a_time_column(tmp_path: Path) -> None:
    from genesig.pipeline.cohort import CohortColumns
    from genesig.pipeline.synthetic import SyntheticSpec, write_synthetic_cohort

    path = write_synthetic_cohort(
        tmp_path / "t.csv", default_signatures(), SyntheticSpec(seed=4, planted={"metagene_9": 1.2}, with_time=True)
    )
    cohort = read_cohort(path, CohortColumns(time="SurvivalMonths"))
    [signature] = select(default_signatures(), ["metagene_9"])
    prepared = preprocess(cohort, match(signature, cohort.candidate_genes(), 2))
    assert prepared.target == "time_to_event"
    config = FAST
    artifact = train_model(prepared, config, 1, tmp_path, cv=cross_validate(prepared, config))
    evaluation = evaluate(prepared, artifact, tmp_path / "eval", GateSettings())
    assert evaluation.decided.passed == (evaluation.cross_validation.mean >= 0.6), "the gate's verdict"
    assert (evaluation.artifact.file, evaluation.artifact.sha256) == (
        artifact.name,
        hashlib.sha256(artifact.read_bytes()).hexdigest(),
    )
    assert json.loads((tmp_path / "eval" / "gate.json").read_text())["reason"] == evaluation.decided.reason
    assert evaluation.metric == "c_index" and evaluation.cross_validation.mean > 0.6
    assert Evaluation.read(tmp_path / "eval") == evaluation, "evaluation.json is what evaluate returned"
    assert read_artifact(artifact).manifest.output.name == "risk_score"


def test_gate_reports_its_reason() -> None:
    evaluation = an_evaluation(
        metric="auc", target="binary", cross_validation={"mean": 0.64, "interval": [0.52, 0.77]},
        test={"value": 0.58, "patients": 40, "events": 18},
    )  # fmt: skip
    passed = gate(evaluation, GateSettings(threshold=0.6))
    assert passed.passed and passed.reason == "cross-validated mean auc 0.640 >= threshold 0.600"
    failed = gate(evaluation, GateSettings(threshold=0.6, gate_on="cv_lower"))
    assert not failed.passed and failed.reason == "lower CV bound of auc 0.520 < threshold 0.600"
    assert not gate(evaluation, GateSettings(threshold=0.6, gate_on="test")).passed


def test_a_lone_evaluation_repeats_the_training_settings_the_manifest_records(
    synthetic_csv: Path, tmp_path: Path
) -> None:
    """The one-signature path rebuilds the settings its permutations repeat from the manifest: every setting that
    changes a cross-validation must come back as it was given, ``max_iter`` included."""
    from genesig.pipeline.steps import settings_of

    _, prepared = prepared_for(synthetic_csv, "metagene_19")
    given = msgspec.structs.replace(FAST, max_iter=17, l2=0.1)
    manifest = read_artifact(
        train_model(prepared, given, 1, tmp_path / "m", cv=cross_validate(prepared, given))
    ).manifest
    rebuilt = settings_of(manifest)
    for name in ("model", "l2", "seed", "cv_folds", "cv_repeats", "max_iter"):
        assert getattr(rebuilt, name) == getattr(given, name), name
