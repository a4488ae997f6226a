"""Which patients train and which are held out, and which target the data gives: one stratified, seeded split of the
cohort, the same for every signature of a run (and for the gate's random gene sets)."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from genesig.artifact.manifest import TargetKind
from genesig.errors import DataError
from genesig.pipeline.cohort import Cohort
from genesig.pipeline.settings import TrainSettings


def choose_target(cohort: Cohort, requested: TargetKind | None) -> TargetKind:
    if requested == "time_to_event" and not cohort.has_time:
        raise DataError("--target time_to_event needs a time column (--time-column)")
    return requested or ("time_to_event" if cohort.has_time else "binary")


def split_rows(cohort: Cohort, settings: TrainSettings) -> tuple[np.ndarray, np.ndarray]:
    """The training and held-out rows (sorted positions), stratified by event and seeded by ``settings.seed``."""
    if not 0.05 <= settings.test_fraction <= 0.5:
        raise DataError(f"test fraction must be between 0.05 and 0.5, got {settings.test_fraction}")
    train_rows, test_rows = train_test_split(
        np.arange(cohort.n), test_size=settings.test_fraction, stratify=cohort.event, random_state=settings.seed,
        shuffle=True,
    )  # fmt: skip
    return np.sort(train_rows), np.sort(test_rows)
