"""Cohort data: read a CSV or Parquet file of patients and validate it at the boundary, naming rows and columns.

One row per patient: an id column, gene expression columns (raw, non-negative), an event
column (1 = event/deceased) and optionally a time column. Which columns are genes is decided
by the signatures: only the genes a signature uses are read as numbers and validated.
"""

from __future__ import annotations

import csv
import hashlib
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from genesig.errors import DataError
from genesig.pipeline.settings import CohortSettings, ExpressionScale

# Lines in messages are file lines: the header is line 1, the first patient line 2.
_FIRST_DATA_LINE = 2
_SHOW = 5


@dataclass(frozen=True)
class CohortColumns:
    """Column names; the defaults (CohortSettings') read the seed NSCLC cohort unchanged."""

    id: str = CohortSettings().id_column
    event: str = CohortSettings().event_column
    time: str | None = None
    # raw: non-negative values, log1p-transformed; log: on a log scale already, negative values allowed.
    values: ExpressionScale = CohortSettings().values


def columns_of(settings: CohortSettings) -> CohortColumns:
    # An empty time column (a pipeline parameter's way of saying none) means none.
    return CohortColumns(
        id=settings.id_column, event=settings.event_column, time=settings.time_column or None, values=settings.values
    )


@dataclass(frozen=True)
class Cohort:
    """Validated patients: ids, events (bool), optional times, and the raw table for gene columns."""

    source: str
    columns: CohortColumns
    ids: np.ndarray
    event: np.ndarray
    time: np.ndarray | None
    table: pd.DataFrame
    # Validated float columns by gene: parsed once, shared by every signature that uses the gene.
    _parsed: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def has_time(self) -> bool:
        return self.time is not None

    @property
    def log1p(self) -> bool:
        """Whether models log-transform the values (raw expression) or take them as given (already log scale)."""
        return self.columns.values == "raw"

    def candidate_genes(self) -> list[str]:
        reserved = {self.columns.id, self.columns.event, self.columns.time}
        return [c for c in self.table.columns if c not in reserved]

    def expression(self, genes: list[str]) -> np.ndarray:
        """Values of ``genes`` (rows x genes) as float64, refusing missing and non-numeric values, and negative ones
        when the values are raw expression."""
        absent = [g for g in genes if g not in self.table.columns]
        if absent:
            raise DataError(f"{self.source}: no column for genes {', '.join(absent)}")
        todo = [g for g in dict.fromkeys(genes) if g not in self._parsed]
        if todo:
            self._parse(todo)
        return np.column_stack([self._parsed[g] for g in genes]) if genes else np.empty((self.n, 0))

    def _parse(self, genes: list[str]) -> None:
        """One correctly rounded numpy conversion for the whole block; a column that fails any check is
        parsed again on its own to name the problem and its rows."""
        try:
            block = self.table[genes].to_numpy(dtype=str).astype(np.float64)
        except ValueError:
            block = None
        for j, gene in enumerate(genes):
            column = None if block is None else block[:, j]
            if column is None or not np.isfinite(column).all() or (self.log1p and (column < 0).any()):
                column = self._numeric_column(gene)
            self._parsed[gene] = column

    def _numeric_column(self, gene: str) -> np.ndarray:
        raw = self.table[gene]
        numbers = pd.to_numeric(raw, errors="coerce")
        missing = raw.isna() | (raw.astype(str).str.strip() == "")
        if missing.any():
            raise DataError(f"{self.source}: column {gene} has missing values in {self._rows(missing)}")
        bad = numbers.isna()
        if bad.any():
            raise DataError(f"{self.source}: column {gene} has non-numeric values in {self._rows(bad)}")
        # pandas' own number parser is off by one ulp on many values; numpy's is correctly rounded, like the
        # server's, so a client sending the same text gets exactly the training-time predictions.
        array = raw.astype(str).str.strip().to_numpy().astype(np.float64)
        not_finite = ~np.isfinite(array)
        if not_finite.any():
            raise DataError(f"{self.source}: column {gene} has NaN or infinite values in {self._rows(not_finite)}")
        negative = array < 0
        if self.log1p and negative.any():
            raise DataError(
                f"{self.source}: column {gene} has negative expression in {self._rows(negative)}; "
                "expected raw non-negative values (counts, FPKM, TPM), or give --values log for values already on a "
                "log scale"
            )
        return array

    def _rows(self, mask: pd.Series | np.ndarray) -> str:
        return describe_rows(np.flatnonzero(np.asarray(mask)), self.table[self.columns.id].astype(str).to_numpy())

    def fingerprint(self, genes: list[str]) -> str:
        """sha256 of what a model trained on ``genes`` saw: ids, outcome and those gene columns, in file order."""
        digest = hashlib.sha256()
        digest.update("\x1f".join(map(str, self.ids)).encode())
        digest.update(self.event.astype(np.uint8).tobytes())
        if self.time is not None:
            digest.update(self.time.astype(np.float64).tobytes())
        digest.update("\x1f".join(genes).encode())
        digest.update(np.ascontiguousarray(self.expression(genes)).tobytes())
        return digest.hexdigest()

    def subset(self, rows: np.ndarray) -> Cohort:
        return Cohort(
            source=self.source,
            columns=self.columns,
            ids=self.ids[rows],
            event=self.event[rows],
            time=None if self.time is None else self.time[rows],
            table=self.table.iloc[rows].reset_index(drop=True),
        )


def describe_rows(positions: np.ndarray, ids: np.ndarray) -> str:
    shown = ", ".join(f"line {p + _FIRST_DATA_LINE} ({ids[p]})" for p in positions[:_SHOW])
    more = f" and {len(positions) - _SHOW} more" if len(positions) > _SHOW else ""
    return f"{len(positions)} row(s): {shown}{more}"


DATA_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq")


def single_file(path: Path, suffixes: tuple[str, ...], what: str) -> Path:
    """A file, or a folder holding exactly one file of that kind (SageMaker downloads S3 prefixes into folders)."""
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
        if len(found) != 1:
            raise DataError(f"{path} holds {len(found)} {what} files ({', '.join(suffixes)}); expected exactly one")
        return found[0]
    if not path.is_file():
        raise DataError(f"{what} file {path} does not exist")
    return path


def _check_unique_columns(names: list[str], source: str) -> None:
    duplicated = sorted(name for name, count in Counter(name.strip() for name in names).items() if count > 1)
    if duplicated:
        raise DataError(f"{source}: columns appear more than once: {', '.join(duplicated)}")


def _read_table(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            # Validation works on text for both formats: missing values become "", numbers their repr.
            frame = pd.read_parquet(path)
            _check_unique_columns([str(c) for c in frame.columns], path.name)
            return frame.astype(object).where(frame.notna(), "").astype(str)
        if suffix in (".csv", ".txt", ".tsv"):
            sep = "\t" if suffix == ".tsv" else ","
            # pandas renames a repeated column ("A" -> "A.1"): check the header as written.
            with open(path, newline="", encoding="utf-8-sig") as handle:
                _check_unique_columns(next(csv.reader(handle, delimiter=sep), []), path.name)
            # Rows longer than the header are an error, not an index pandas would infer (shifting every column).
            with warnings.catch_warnings():
                warnings.simplefilter("error", pd.errors.ParserWarning)
                return pd.read_csv(path, dtype=str, keep_default_na=False, sep=sep, index_col=False)
    except (pd.errors.ParserError, pd.errors.ParserWarning, csv.Error) as exc:
        kind = "TSV" if suffix == ".tsv" else "CSV"
        raise DataError(
            f"cannot read {path.name}: not a well-formed {kind} ({str(exc).strip()}); check that every quote is closed "
            "and every row has as many fields as the header"
        ) from None
    except (ValueError, OSError) as exc:
        raise DataError(f"cannot read {path.name}: {exc}") from None
    raise DataError(f"{path.name}: unsupported data file type {suffix!r}; use .csv, .tsv or .parquet")


def _closest_columns(absent: list[str], present: list[str]) -> str:
    """``; did you mean X?`` for each absent column with a close match among the file's (case, spelling): the file's
    first columns alone rarely show the one meant."""
    import difflib

    lower = {c.lower(): c for c in present}
    guesses = []
    for name in absent:
        match = lower.get(name.lower()) or next(iter(difflib.get_close_matches(name, present, n=1, cutoff=0.75)), None)
        if match:
            guesses.append(f"{match} for {name}")
    return f" (did you mean {', '.join(guesses)}?)" if guesses else ""


def read_cohort(path: Path, columns: CohortColumns | None = None, *, min_events: int = 10) -> Cohort:
    """Read and validate a cohort file; every problem is reported with the file line and patient id."""
    columns = columns or CohortColumns()
    path = single_file(path, DATA_SUFFIXES, "data")
    table = _read_table(path)
    table.columns = [str(c).strip() for c in table.columns]
    source = path.name
    needed = [columns.id, columns.event] + ([columns.time] if columns.time else [])
    absent = [c for c in needed if c not in table.columns]
    if absent:
        raise DataError(
            f"{source}: missing column(s) {', '.join(absent)}{_closest_columns(absent, list(table.columns))}; "
            f"the file has {len(table.columns)} columns, the first {', '.join(table.columns[:8])} (set the column "
            "names with --id-column, --event-column, --time-column)"
        )
    if table.empty:
        raise DataError(f"{source}: no patient rows")
    ids = table[columns.id].astype(str).str.strip().to_numpy()
    empty_ids = ids == ""
    if empty_ids.any():
        raise DataError(f"{source}: column {columns.id} is empty in {describe_rows(np.flatnonzero(empty_ids), ids)}")
    duplicated = pd.Series(ids).duplicated(keep=False).to_numpy()
    if duplicated.any():
        raise DataError(f"{source}: duplicate patient ids in {describe_rows(np.flatnonzero(duplicated), ids)}")

    event_text = table[columns.event].astype(str).str.strip()
    valid_event = event_text.isin(["0", "1", "0.0", "1.0"]).to_numpy()
    if not valid_event.all():
        raise DataError(
            f"{source}: column {columns.event} must be 0 or 1 (1 = event); "
            f"other values in {describe_rows(np.flatnonzero(~valid_event), ids)}"
        )
    event = event_text.astype(float).to_numpy() == 1.0

    time = None
    if columns.time:
        numbers = pd.to_numeric(table[columns.time], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(numbers) | (numbers <= 0)
        if bad.any():
            raise DataError(
                f"{source}: column {columns.time} must hold positive times; "
                f"missing, non-numeric or non-positive in {describe_rows(np.flatnonzero(bad), ids)}"
            )
        time = numbers

    n_events = int(event.sum())
    for label, count in (("events", n_events), ("non-events", len(event) - n_events)):
        if count < min_events:
            raise DataError(
                f"{source}: only {count} {label} in column {columns.event}; at least {min_events} are needed "
                "to train and evaluate a model (all samples censored or all events?)"
            )
    return Cohort(source=source, columns=columns, ids=ids, event=event, time=time, table=table)
