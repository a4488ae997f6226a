"""The synthetic cohort is shaped like real data and reproducible."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from genesig.errors import DataError
from genesig.pipeline.signatures import default_signatures
from genesig.pipeline.synthetic import SyntheticSpec, synthetic_cohort


def test_shape_skew_zeros_event_rate_and_seed() -> None:
    spec = SyntheticSpec(n_patients=400, seed=3, planted={"metagene_19": 1.0})
    frame = synthetic_cohort(default_signatures(), spec)
    genes = [g for g in frame.columns if g not in ("Case_ID", "SurvivalStatus")]
    assert len(genes) == 21 and frame["Case_ID"].is_unique
    values = frame[genes].to_numpy()
    assert (values >= 0).all() and 0.05 < (values == 0).mean() < 0.4, "non-negative with zeros"
    assert (pd.DataFrame(values).skew() > 0).mean() > 0.8, "right-skewed like FPKM"
    assert 0.28 < frame["SurvivalStatus"].mean() < 0.42
    assert synthetic_cohort(default_signatures(), spec).equals(frame)


def test_genes_correlate_within_a_signature_not_across() -> None:
    frame = synthetic_cohort(default_signatures(), SyntheticSpec(n_patients=600, seed=1))
    logged = np.log1p(frame[["CDH2", "POSTN", "VCAN", "VIM", "LMO2"]])
    corr = logged.corr(method="spearman")
    within = corr.loc["CDH2", ["POSTN", "VCAN"]].mean()
    across = corr.loc["CDH2", ["VIM", "LMO2"]].abs().mean()
    assert within > 0.2 and across < 0.1


def test_more_gene_noise_makes_a_signature_less_coherent() -> None:
    def within(noise: float) -> float:
        frame = synthetic_cohort(default_signatures(), SyntheticSpec(n_patients=600, seed=1, gene_noise=noise))
        corr = np.log1p(frame[["CDH2", "POSTN", "VCAN"]]).corr().to_numpy()
        return float(corr[np.triu_indices(3, 1)].mean())

    assert within(0.6) > within(1.2) + 0.08 > 0.08


def test_times_are_censored_near_the_event_rate() -> None:
    frame = synthetic_cohort(default_signatures(), SyntheticSpec(n_patients=500, seed=2, with_time=True))
    assert (frame["SurvivalMonths"] > 0).all()
    assert 0.30 < frame["SurvivalStatus"].mean() < 0.40


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"event_rate": 1.5}, "--event-rate 1.5: the share of patients with the event"),
        ({"event_rate": -0.5}, "--event-rate -0.5"),
        ({"background_genes": -5}, "--background-genes -5"),
        ({"n_patients": 5}, "--patients 5: a synthetic cohort needs at least 20"),
        ({"gene_noise": 0.0}, "gene noise 0: the SD of a gene's own noise, above 0"),
    ],
)
def test_an_impossible_cohort_is_refused_naming_its_option(change: dict[str, float], problem: str) -> None:
    with pytest.raises(DataError, match=problem):
        SyntheticSpec(**change)  # type: ignore[arg-type]


def test_planting_an_unknown_signature_names_the_known_ones() -> None:
    with pytest.raises(DataError, match=r"--plant nosuch: no such signature in the set \(it has metagene_19"):
        synthetic_cohort(default_signatures(), SyntheticSpec(planted={"nosuch": 1.0}))
