"""Seeded synthetic artifacts with known weights, for the server self-check, tests and benchmarks.

They follow the full contract (preprocessing, risk groups, checksums) so the server
cannot tell them from trained models; the pipeline writes real ones through the same writer.
"""

from __future__ import annotations

import platform
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

import genesig
from genesig.artifact.manifest import (
    SCHEMA_VERSION,
    Architecture,
    Manifest,
    Output,
    Preprocessing,
    RiskGroups,
    Signature,
    TargetKind,
    TrainingData,
)
from genesig.artifact.model import expected_tensor_shapes
from genesig.artifact.package import sha256_bytes, write_artifact


def synthetic_manifest(
    name: str,
    genes: list[str],
    *,
    version: int = 1,
    target: TargetKind = "binary",
    hidden_units: int = 0,
    seed: int = 0,
) -> Manifest:
    rng = np.random.default_rng(seed)
    n = len(genes)
    is_binary = target == "binary"
    return Manifest(
        schema_version=SCHEMA_VERSION,
        name=name,
        version=version,
        signature=Signature(name=name, source="synthetic", genes_requested=list(genes)),
        genes=list(genes),
        id_column="Case_ID",
        target=target,
        model=Architecture(kind="mlp", hidden_units=hidden_units, activation="tanh")
        if hidden_units
        else Architecture(kind="linear"),
        preprocessing=Preprocessing(
            log1p=True,
            center=rng.uniform(0.5, 3.0, n).round(6).tolist(),
            scale=rng.uniform(0.5, 2.0, n).round(6).tolist(),
        ),
        output=Output(
            name="probability" if is_binary else "risk_score",
            description="probability of the event (death) within follow-up"
            if is_binary
            else "Cox linear predictor; higher means higher hazard",
            risk_groups=RiskGroups(cutpoints=[0.5] if is_binary else [0.0], labels=["low", "high"]),
        ),
        metrics={"cv_auc_mean": 0.5} if is_binary else {"cv_c_index_mean": 0.5},
        training_data=TrainingData(
            fingerprint=sha256_bytes(f"synthetic:{name}:{seed}".encode()),
            n_rows=100,
            n_events=35,
            event_column="SurvivalStatus",
        ),
        created_at=datetime(2026, 1, 1, tzinfo=UTC).isoformat(),
        versions={"genesig": genesig.__version__, "numpy": np.__version__, "python": platform.python_version()},
    )


def synthetic_tensors(manifest: Manifest, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed + 1)
    return {
        name: rng.normal(0.0, 0.5, shape).astype(np.float32) for name, shape in expected_tensor_shapes(manifest).items()
    }


def write_synthetic_artifact(
    out_dir: Path,
    name: str,
    genes: list[str],
    *,
    version: int = 1,
    target: TargetKind = "binary",
    hidden_units: int = 0,
    seed: int = 0,
) -> Path:
    manifest = synthetic_manifest(name, genes, version=version, target=target, hidden_units=hidden_units, seed=seed)
    return write_artifact(manifest, synthetic_tensors(manifest, seed), out_dir)
