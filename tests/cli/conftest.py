"""The pipeline tests' cohorts, for the step commands' tests."""

from tests.pipeline.conftest import seed_cohort, synthetic_csv

__all__ = ["seed_cohort", "synthetic_csv"]
