"""Reading and validating cohort files: every problem names its rows (file line and id) and columns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from genesig.errors import DataError
from genesig.pipeline.cohort import CohortColumns, read_cohort


def test_seed_cohort_reads_unchanged(seed_cohort: Path) -> None:
    raw = seed_cohort.read_bytes()
    assert b"\r\n" in raw and not raw.endswith(b"\n"), "CRLF, no final newline: read as is"
    cohort = read_cohort(seed_cohort)
    assert (cohort.n, int(cohort.event.sum()), cohort.has_time) == (119, 42, False)
    assert cohort.ids[0] == "R01-005"
    values = cohort.expression(["LRIG1", "HPGD"])
    assert values.shape == (119, 2) and values[0, 0] == pytest.approx(25.438505)
    assert "PathologicalMstage" in cohort.candidate_genes() and "SurvivalStatus" not in cohort.candidate_genes()


def write(tmp_path: Path, text: str, name: str = "c.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def cohort_text(rows: list[str], header: str = "Case_ID,G1,G2,SurvivalStatus") -> str:
    return header + "\n" + "\n".join(rows) + "\n"


def balanced(n: int = 24) -> list[str]:
    return [f"P{i},{i}.5,{i % 3},{i % 2}" for i in range(n)]


def test_duplicate_ids_are_named(tmp_path: Path) -> None:
    rows = balanced()
    rows[5] = rows[5].replace("P5,", "P1,")
    with pytest.raises(DataError, match=r"duplicate patient ids in 2 row\(s\): line 3 \(P1\), line 7 \(P1\)"):
        read_cohort(write(tmp_path, cohort_text(rows)), min_events=5)


@pytest.mark.parametrize(
    ("header", "name"),
    [("Case_ID,G1,G1,SurvivalStatus", "c.csv"), ("Case_ID\tG1\t G1\tSurvivalStatus", "c.tsv")],
)
def test_repeated_gene_columns_are_refused_not_renamed(tmp_path: Path, header: str, name: str) -> None:
    # pandas alone would read the second G1 as "G1.1" and train on both.
    rows = [r.replace(",", "\t") if name.endswith(".tsv") else r for r in balanced()]
    with pytest.raises(DataError, match=f"{name}: columns appear more than once: G1"):
        read_cohort(write(tmp_path, cohort_text(rows, header), name), min_events=5)


def test_repeated_columns_in_parquet_are_refused(tmp_path: Path) -> None:
    frame = pd.DataFrame([["P1", 1.0, 2.0, 1]], columns=["Case_ID", "G1", " G1", "SurvivalStatus"])
    path = tmp_path / "c.parquet"
    frame.to_parquet(path)
    with pytest.raises(DataError, match="columns appear more than once: G1"):
        read_cohort(path, min_events=0)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", "non-numeric values"),
        ("", "missing values"),
        ("-3", "negative expression"),
        ("inf", "NaN or infinite values"),
    ],
)
def test_bad_expression_names_the_gene_and_rows(tmp_path: Path, value: str, message: str) -> None:
    rows = balanced()
    rows[3] = f"P3,{value},1,1"
    cohort = read_cohort(write(tmp_path, cohort_text(rows)), min_events=5)
    with pytest.raises(DataError, match=f"column G1 has {message} in 1 row\\(s\\): line 5 \\(P3\\)"):
        cohort.expression(["G1", "G2"])
    assert cohort.expression(["G2"]).shape == (24, 1), "other genes stay usable"


def test_event_must_be_zero_or_one(tmp_path: Path) -> None:
    rows = balanced()
    rows[0] = "P0,1,1,2"
    with pytest.raises(DataError, match=r"SurvivalStatus must be 0 or 1.*line 2 \(P0\)"):
        read_cohort(write(tmp_path, cohort_text(rows)), min_events=5)


def test_times_must_be_positive(tmp_path: Path) -> None:
    rows = [r + f",{i + 1}" for i, r in enumerate(balanced())]
    rows[2] = "P2,1,1,1,0"
    path = write(tmp_path, cohort_text(rows, "Case_ID,G1,G2,SurvivalStatus,Months"))
    with pytest.raises(DataError, match=r"Months must hold positive times.*line 4 \(P2\)"):
        read_cohort(path, CohortColumns(time="Months"), min_events=5)


def test_too_few_events_is_refused(tmp_path: Path) -> None:
    rows = [f"P{i},1,1,{int(i < 3)}" for i in range(30)]
    with pytest.raises(DataError, match="only 3 events in column SurvivalStatus; at least 10"):
        read_cohort(write(tmp_path, cohort_text(rows)))


def test_missing_columns_suggest_the_flags(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing column\(s\) SurvivalStatus.*--event-column"):
        read_cohort(write(tmp_path, "Case_ID,G1,Status\nP1,1,0\n"))
    # The column meant is named even when it is not among the first few shown.
    genes = ",".join(f"G{i}" for i in range(50))
    with pytest.raises(DataError, match=r"did you mean survivalstatus for SurvivalStatus\?.*has 52 columns"):
        read_cohort(write(tmp_path, f"Case_ID,{genes},survivalstatus\nP1,{','.join('1' * 50)},0\n"))


def test_empty_and_unsupported_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no patient rows"):
        read_cohort(write(tmp_path, "Case_ID,G1,SurvivalStatus\n"))
    with pytest.raises(DataError, match="unsupported data file type '.xlsx'"):
        read_cohort(write(tmp_path, "x", "c.xlsx"))
    with pytest.raises(DataError, match="does not exist"):
        read_cohort(tmp_path / "nowhere.csv")


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ('Case_ID,G1,SurvivalStatus\n"p1,1,0\n', "EOF inside string"),
        ("Case_ID,G1,SurvivalStatus\np1,1,0\np2,1,0,7\n", "Expected 3 fields in line 3, saw 4"),
        # Every row one field longer: pandas would take the first column as an index and shift the rest.
        ("Case_ID,G1,SurvivalStatus\np1,1,0,7\np2,1,1,7\n", "does not match length of data"),
    ],
)
def test_a_malformed_csv_names_the_problem_and_what_to_check(tmp_path: Path, text: str, detail: str) -> None:
    with pytest.raises(DataError, match="not a well-formed CSV") as error:
        read_cohort(write(tmp_path, text))
    assert detail in error.value.message and "as many fields as the header" in error.value.message


def test_parquet_reads_like_csv(tmp_path: Path, seed_cohort: Path) -> None:
    frame = pd.read_csv(seed_cohort)
    frame.to_parquet(tmp_path / "c.parquet", index=False)
    a, b = read_cohort(seed_cohort), read_cohort(tmp_path / "c.parquet")
    assert (a.ids == b.ids).all() and (a.event == b.event).all()
    np.testing.assert_array_equal(a.expression(["GDF15", "VIM"]), b.expression(["GDF15", "VIM"]))


def test_fingerprint_tracks_the_data_a_model_sees(seed_cohort: Path, tmp_path: Path) -> None:
    a = read_cohort(seed_cohort)
    assert a.fingerprint(["LRIG1"]) == read_cohort(seed_cohort).fingerprint(["LRIG1"])
    assert a.fingerprint(["LRIG1"]) != a.fingerprint(["HPGD"])
    changed = seed_cohort.read_text().replace("25.438505", "25.438506")
    b = read_cohort(write(tmp_path, changed))
    assert b.fingerprint(["LRIG1"]) != a.fingerprint(["LRIG1"]) and b.fingerprint(["HPGD"]) == a.fingerprint(["HPGD"])


def test_values_are_parsed_exactly_like_the_server_parses_them(seed_cohort: Path) -> None:
    """Correctly rounded, as float() and msgspec are: a client sending the file's text gets the same numbers."""
    cohort = read_cohort(seed_cohort)
    genes = cohort.candidate_genes()[:21]
    lines = seed_cohort.read_text().splitlines()[1:]
    header = seed_cohort.read_text().splitlines()[0].split(",")
    expected = np.array([[float(line.split(",")[header.index(g)]) for g in genes] for line in lines])
    assert np.array_equal(cohort.expression(genes), expected)


def test_log_scale_values_may_be_negative_and_are_used_as_given(tmp_path: Path) -> None:
    """Microarray log-ratios: refused as raw expression with the option named, read with --values log; the model
    then skips log1p, in training and in serving alike."""
    from genesig.artifact.model import apply_preprocessing
    from genesig.pipeline.model import fit_preprocessing

    rows = balanced()
    rows[3] = "P3,-3.5,1,1"
    path = write(tmp_path, cohort_text(rows))
    with pytest.raises(DataError, match="negative expression.*or give --values log"):
        read_cohort(path, min_events=5).expression(["G1"])
    cohort = read_cohort(path, CohortColumns(values="log"), min_events=5)
    values = cohort.expression(["G1", "G2"])
    assert values[3, 0] == -3.5 and not cohort.log1p
    preprocessing = fit_preprocessing(values, cohort.log1p)
    assert preprocessing.log1p is False and preprocessing.center[0] == pytest.approx(values[:, 0].mean())
    z = apply_preprocessing(preprocessing, ["G1", "G2"], values)
    np.testing.assert_allclose(z[:, 0], (values[:, 0] - values[:, 0].mean()) / values[:, 0].std())
