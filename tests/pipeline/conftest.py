"""Shared data for the pipeline tests: the seed cohort from ../shared/data and synthetic cohorts."""

from __future__ import annotations

from pathlib import Path

import pytest

from genesig.pipeline.signatures import GeneSignature, default_signatures
from genesig.pipeline.synthetic import SyntheticSpec, write_synthetic_cohort

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SEED_COHORT = SHARED / "nsclc-metagenes-119.csv"
HALLMARK = SHARED / "msigdb-hallmark-v7.0.gmt"
GO_BP = SHARED / "go-biological-process-2021.gmt"


@pytest.fixture(scope="session")
def seed_cohort() -> Path:
    assert SEED_COHORT.is_file(), f"shared test data missing: {SEED_COHORT}"
    return SEED_COHORT


@pytest.fixture
def synthetic_csv(tmp_path: Path) -> Path:
    """120 patients with an effect planted in metagene_19 and metagene_10; the other metagenes are noise."""
    spec = SyntheticSpec(seed=1, planted={"metagene_19": 1.5, "metagene_10": 1.0})
    return write_synthetic_cohort(tmp_path / "cohort.csv", default_signatures(), spec)


def noise_and_planted(n_noise: int = 2) -> list[GeneSignature]:
    planted = [
        GeneSignature("planted_a", ("PA1", "PA2", "PA3")),
        GeneSignature("planted_b", ("PB1", "PB2", "PB3", "PB4")),
    ]
    noise = [GeneSignature(f"noise_{i}", tuple(f"N{i}_{j}" for j in range(4))) for i in range(n_noise)]
    return planted + noise
