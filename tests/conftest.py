"""Shared fixtures: seeded artifacts written through the real writer, extracted as SageMaker would."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from genesig.artifact import extract_artifact
from genesig.artifact.manifest import TargetKind
from genesig.artifact.synthetic import write_synthetic_artifact

GENES = ["LRIG1", "HPGD", "GDF15"]
REPO = Path(__file__).resolve().parents[1]
# Each test folder's marker; the ones that start servers, emulators or Docker are also ``slow``, so that
# ``pytest -m "not slow"`` (the folders that mirror the packages) is the fast path and CI runs everything.
FOLDER_MARKERS = {
    "integration": ("integration", "slow"),
    "aws": ("aws", "slow"),
    "image": ("image", "slow"),
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tests = (REPO / "tests").resolve()
    for item in items:
        path = Path(item.path).resolve()
        folder = path.relative_to(tests).parts[0] if path.is_relative_to(tests) else ""
        for marker in FOLDER_MARKERS.get(folder, ()):
            item.add_marker(marker)


ModelFactory = Callable[..., Path]


@pytest.fixture
def genes() -> list[str]:
    return list(GENES)


@pytest.fixture
def make_archive(tmp_path: Path) -> Callable[..., Path]:
    """Write a synthetic ``<name>-v<N>.tar.gz`` and return its path."""

    def make(
        name: str = "metagene_19",
        genes: list[str] | None = None,
        *,
        version: int = 1,
        target: TargetKind = "binary",
        hidden_units: int = 0,
        seed: int = 0,
    ) -> Path:
        return write_synthetic_artifact(
            tmp_path / "prefix",
            name,
            genes or list(GENES),
            version=version,
            target=target,
            hidden_units=hidden_units,
            seed=seed,
        )

    return make


@pytest.fixture
def make_model_dir(make_archive: Callable[..., Path], tmp_path: Path) -> ModelFactory:
    """Write and extract an artifact into ``<tmp>/models/<name>-v<N>/model`` like SageMaker's model cache."""

    def make(name: str = "metagene_19", **kwargs: object) -> Path:
        archive = make_archive(name, **kwargs)
        return extract_artifact(archive, tmp_path / "models" / archive.name.removesuffix(".tar.gz") / "model")

    return make
