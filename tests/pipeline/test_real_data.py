"""Real cohorts (SurvSet, GPL: test and benchmark only): how their columns are read, and the pipeline's ridge Cox
agreeing with lifelines' on the same folds (bench/real_data.py measures all of them)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import real_data  # noqa: E402


def test_survset_expression_columns_become_gene_symbols_and_clinical_columns_are_left_out() -> None:
    frame = real_data.survset_cohort("gse4335")
    assert list(frame.columns[:1]) == ["Case_ID"] and list(frame.columns[-2:]) == ["SurvivalStatus", "time"]
    genes = frame.columns[1:-2]
    assert {"ESR1", "ERBB2", "MKI67"} <= set(genes), "num_HS_<SYMBOL> columns are read as symbols"
    assert not any(g.startswith(("num_", "fac_", "HS_")) for g in genes) and "age" not in set(genes)
    assert (frame[genes].to_numpy() < 0).any(), "log-ratios: read with --values log"
    anonymous = real_data.survset_cohort("DBCD")
    assert anonymous.columns[1] == "gene_1"


@pytest.mark.parametrize("cohort", ["gse4335", "DBCD"])
def test_the_top_variance_signature_agrees_with_lifelines_on_the_same_folds(cohort: str, tmp_path: Path) -> None:
    row = real_data.agreement(cohort, top_genes=40, cv_repeats=1, l2=1.0, work=tmp_path)
    assert abs(row["difference"]) <= 0.03, row
    assert 0.5 < row["genesig_cv_c_index"] and 0.5 < row["genesig_tuned_cv_c_index"], row
