"""Request decoding and response encoding for invocations, validated against the model's gene list by name.

Accepted bodies (``application/json``):
  ``{"inputs": [[v, ...], ...]}``            positional rows in manifest gene order (the AWS sample's format)
  ``{"columns": [...], "data": [[...]]}``    named columns (pandas ``orient="split"``)
  ``[{"GENE": v, ...}, ...]``                records (pandas ``orient="records"``)
and ``text/csv`` with a header row of gene names. Rows are counted from 0, the CSV header not counted.
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np

from genesig.artifact import Manifest, Predictions
from genesig.errors import BadRequest, NotAcceptable, PayloadTooLarge, UnsupportedMediaType

JSON = "application/json"
CSV = "text/csv"
CONTENT_TYPES = (JSON, CSV)
_ACCEPT_ALIASES = {"*/*": JSON, "application/*": JSON, "text/*": CSV, JSON: JSON, CSV: CSV}

_ROWS_TYPE = list[list[float]]
_json_decoder = msgspec.json.Decoder()
_json_encoder = msgspec.json.Encoder()


@dataclass(frozen=True)
class Batch:
    """Raw expression values in manifest gene order, and the caller's row ids when it sent an id column."""

    matrix: np.ndarray
    ids: list[Any] | None


def media_type(header: str | None) -> str:
    return (header or "").split(";", 1)[0].strip().lower()


def negotiate_accept(accept: str | None) -> str:
    """Pick the response type from an Accept header (q-values honoured); JSON when absent."""
    if not accept or not accept.strip():
        return JSON
    ranges: list[tuple[float, int, str]] = []
    for position, part in enumerate(accept.split(",")):
        kind, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            if param.lower().startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        if kind and q > 0:
            ranges.append((-q, position, kind.lower()))
    for _, _, kind in sorted(ranges):
        if kind in _ACCEPT_ALIASES:
            return _ACCEPT_ALIASES[kind]
    raise NotAcceptable(
        f"cannot produce {accept!r}; this model answers {' or '.join(CONTENT_TYPES)}",
        detail={"supported": list(CONTENT_TYPES)},
    )


def decode_request(
    body: bytes, content_type: str | None, genes: Sequence[str], id_columns: Sequence[str], max_rows: int
) -> Batch:
    """Turn a request body into a validated batch, or raise a 4xx error naming what is wrong."""
    kind = media_type(content_type)
    if kind not in CONTENT_TYPES:
        raise UnsupportedMediaType(
            f"content type {kind or '(none)'!r} is not supported; send {' or '.join(CONTENT_TYPES)}",
            detail={"supported": list(CONTENT_TYPES)},
        )
    if not body or not body.strip():
        raise BadRequest("request body is empty")
    batch = (
        _decode_csv(body, genes, id_columns, max_rows)
        if kind == CSV
        else _decode_json(body, genes, id_columns, max_rows)
    )
    _check_finite(batch.matrix, genes)
    return batch


def _check_rows(n_rows: int, max_rows: int) -> None:
    if n_rows == 0:
        raise BadRequest("request has no rows")
    if n_rows > max_rows:
        raise PayloadTooLarge(f"request has {n_rows} rows; the limit is {max_rows} per invocation")


def _check_finite(matrix: np.ndarray, genes: Sequence[str]) -> None:
    if np.isfinite(matrix).all():
        return
    row, col = (int(v) for v in np.argwhere(~np.isfinite(matrix))[0])
    raise BadRequest(
        f"row {row}, gene {genes[col]}: value is NaN or infinite; send finite numbers",
        detail={"row": row, "gene": genes[col]},
    )


def _bad_value(row: int, gene: str, value: object) -> BadRequest:
    what = "null" if value is None else type(value).__name__
    return BadRequest(f"row {row}, gene {gene}: expected a number, got {what}", detail={"row": row, "gene": gene})


def _number(value: object, row: int, gene: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad_value(row, gene, value)
    try:
        return float(value)
    except OverflowError:
        return math.inf


def _to_matrix(rows: list[list[Any]], genes: Sequence[str]) -> np.ndarray:
    """Rows of JSON values to float64; the fast path is one msgspec conversion, the slow path finds the culprit."""
    try:
        return np.asarray(msgspec.convert(rows, type=_ROWS_TYPE), dtype=np.float64).reshape(len(rows), len(genes))
    except (msgspec.ValidationError, OverflowError):
        return np.array([[_number(v, r, genes[c]) for c, v in enumerate(row)] for r, row in enumerate(rows)])


def _case_hint(missing: Sequence[str], sent: Iterable[Any]) -> str:
    """A hint when columns that were sent match missing genes except for case (gene names are matched exactly)."""
    by_lower = {str(name).strip().lower(): str(name).strip() for name in sent}
    pairs = [(by_lower[g.lower()], g) for g in missing if g.lower() in by_lower]
    if not pairs:
        return ""
    shown = ", ".join(f"{sent_name} → {gene}" for sent_name, gene in pairs[:10])
    more = f" and {len(pairs) - 10} more" if len(pairs) > 10 else ""
    return f". Gene names are case-sensitive; rename the columns that differ only in case: {shown}{more}"


def _column_index(
    header: Sequence[Any], genes: Sequence[str], id_columns: Sequence[str]
) -> tuple[list[int], int | None]:
    names = [str(h).strip() for h in header]
    wanted = set(genes) | set(id_columns)
    duplicated_genes = sorted(n for n, k in Counter(names).items() if k > 1 and n in wanted)
    if duplicated_genes:
        raise BadRequest(
            f"columns appear more than once: {', '.join(duplicated_genes)}", detail={"duplicated": duplicated_genes}
        )
    position = {n: i for i, n in enumerate(names)}
    missing = [g for g in genes if g not in position]
    if missing:
        raise BadRequest(
            f"missing {len(missing)} of the model's {len(genes)} genes: {', '.join(missing)}"
            + _case_hint(missing, names),
            detail={"missing_genes": missing, "expected_genes": list(genes)},
        )
    id_index = next((position[c] for c in id_columns if c in position), None)
    return [position[g] for g in genes], id_index


def _decode_json(body: bytes, genes: Sequence[str], id_columns: Sequence[str], max_rows: int) -> Batch:
    try:
        doc = _json_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None
    except RecursionError:  # msgspec's answer to deeply nested arrays/objects (found by the property-based suite)
        raise BadRequest("body nests JSON arrays or objects too deeply; send rows of numbers") from None
    if isinstance(doc, dict) and "inputs" in doc:
        return _decode_positional(doc, genes, max_rows)
    if isinstance(doc, dict) and "columns" in doc and "data" in doc:
        return _decode_split(doc, genes, id_columns, max_rows)
    if isinstance(doc, list) and all(isinstance(r, dict) for r in doc):
        return _decode_records(doc, genes, id_columns, max_rows)
    raise BadRequest(
        'JSON body must be {"inputs": [[...]]}, {"columns": [...], "data": [[...]]} or a list of records '
        '[{"GENE": value, ...}]'
    )


def _decode_positional(doc: dict[str, Any], genes: Sequence[str], max_rows: int) -> Batch:
    rows = doc["inputs"]
    if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
        raise BadRequest('"inputs" must be a list of rows, each a list of numbers')
    _check_rows(len(rows), max_rows)
    for r, row in enumerate(rows):
        if len(row) != len(genes):
            raise BadRequest(
                f"row {r} has {len(row)} values; this model takes {len(genes)} genes in this order: {', '.join(genes)}",
                detail={"row": r, "expected_genes": list(genes)},
            )
    ids = doc.get("ids")
    if ids is not None and (not isinstance(ids, list) or len(ids) != len(rows)):
        raise BadRequest(f'"ids" must be a list with one id per row ({len(rows)})')
    return Batch(matrix=_to_matrix(rows, genes), ids=ids)


def _decode_split(doc: dict[str, Any], genes: Sequence[str], id_columns: Sequence[str], max_rows: int) -> Batch:
    header, data = doc["columns"], doc["data"]
    if not isinstance(header, list) or not isinstance(data, list) or not all(isinstance(r, list) for r in data):
        raise BadRequest('"columns" must be a list of names and "data" a list of rows')
    _check_rows(len(data), max_rows)
    index, id_index = _column_index(header, genes, id_columns)
    for r, row in enumerate(data):
        if len(row) != len(header):
            raise BadRequest(f"row {r} has {len(row)} values but there are {len(header)} columns", detail={"row": r})
    rows = [[row[i] for i in index] for row in data]
    ids = [row[id_index] for row in data] if id_index is not None else None
    return Batch(matrix=_to_matrix(rows, genes), ids=ids)


def _decode_records(
    records: list[dict[str, Any]], genes: Sequence[str], id_columns: Sequence[str], max_rows: int
) -> Batch:
    _check_rows(len(records), max_rows)
    missing = [g for g in genes if any(g not in rec for rec in records)]
    if missing:
        first_row = next(r for r, rec in enumerate(records) if missing[0] not in rec)
        raise BadRequest(
            f"missing {len(missing)} of the model's {len(genes)} genes (first in row {first_row}): "
            f"{', '.join(missing)}" + _case_hint(missing, records[first_row]),
            detail={"missing_genes": missing, "expected_genes": list(genes)},
        )
    rows = [[rec[g] for g in genes] for rec in records]
    id_column = next((c for c in id_columns if all(c in rec for rec in records)), None)
    ids = [rec[id_column] for rec in records] if id_column else None
    return Batch(matrix=_to_matrix(rows, genes), ids=ids)


def _decode_csv(body: bytes, genes: Sequence[str], id_columns: Sequence[str], max_rows: int) -> Batch:
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"CSV body is not UTF-8 (byte {exc.start})") from None
    try:
        records = [r for r in csv.reader(io.StringIO(text, newline="")) if any(f.strip() for f in r)]
    except csv.Error as exc:
        raise BadRequest(f"CSV body is malformed: {exc}") from None
    if not records:
        raise BadRequest("CSV body has no header row")
    header, data = records[0], records[1:]
    _check_rows(len(data), max_rows)
    index, id_index = _column_index(header, genes, id_columns)
    matrix = np.empty((len(data), len(genes)), dtype=np.float64)
    for r, row in enumerate(data):
        if len(row) != len(header):
            raise BadRequest(f"row {r} has {len(row)} fields but the header has {len(header)}", detail={"row": r})
        for c, i in enumerate(index):
            try:
                matrix[r, c] = float(row[i])
            except ValueError:
                raise BadRequest(
                    f"row {r}, gene {genes[c]}: {'empty value' if not row[i].strip() else 'not a number'}",
                    detail={"row": r, "gene": genes[c]},
                ) from None
    ids = [row[id_index] for row in data] if id_index is not None else None
    return Batch(matrix=matrix, ids=ids)


def encode_response(manifest: Manifest, predictions: Predictions, ids: list[Any] | None, accept: str) -> bytes:
    """Per row: the id (when sent), the probability or risk score, and the risk group; plus model name and version."""
    output = manifest.output.name
    values = predictions.values.tolist()
    if accept == CSV:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow((["id"] if ids is not None else []) + [output, "risk_group", "model", "version"])
        for r, (value, group) in enumerate(zip(values, predictions.groups, strict=True)):
            writer.writerow(
                ([ids[r]] if ids is not None else []) + [repr(value), group, manifest.name, manifest.version]
            )
        return buffer.getvalue().encode()
    rows = [{output: v, "risk_group": g} for v, g in zip(values, predictions.groups, strict=True)]
    if ids is not None:
        rows = [{"id": i, **row} for i, row in zip(ids, rows, strict=True)]
    return _json_encoder.encode(
        {
            "model": manifest.name,
            "version": manifest.version,
            "signature": manifest.signature.name,
            "target": manifest.target,
            "output": output,
            "predictions": rows,
        }
    )
