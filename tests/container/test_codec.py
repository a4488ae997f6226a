"""Request decoding by gene name, validation messages, content negotiation and response encoding."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from genesig.artifact import SignatureModel
from genesig.artifact.synthetic import synthetic_manifest, synthetic_tensors
from genesig.container import codec
from genesig.errors import BadRequest, NotAcceptable, PayloadTooLarge, UnsupportedMediaType

GENES = ["LRIG1", "HPGD", "GDF15"]
IDS = ("Case_ID", "id")
EXPECTED = np.array([[1.0, 2.0, 3.0], [4.0, 0.0, 6.5]])


def decode(body: object, content_type: str = "application/json", max_rows: int = 100) -> codec.Batch:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return codec.decode_request(raw, content_type, GENES, IDS, max_rows)


def test_positional_inputs() -> None:
    batch = decode({"inputs": EXPECTED.tolist()})
    np.testing.assert_array_equal(batch.matrix, EXPECTED)
    assert batch.ids is None


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deeply_nested_json_is_a_bad_request_not_a_crash(depth: int) -> None:
    with pytest.raises(BadRequest, match="nests JSON arrays or objects too deeply"):
        decode(b'{"inputs": ' + b"[" * depth + b"]" * depth + b"}")


def test_positional_width_must_equal_the_gene_count() -> None:
    with pytest.raises(BadRequest, match="row 1 has 2 values; this model takes 3 genes in this order: LRIG1, HPGD"):
        decode({"inputs": [[1, 2, 3], [1, 2]]})


def test_split_columns_are_matched_by_name_extra_ignored_id_echoed() -> None:
    body = {
        "columns": ["GDF15", "extra", "Case_ID", "LRIG1", "HPGD"],
        "data": [[3, "x", "P1", 1, 2], [6.5, None, "P2", 4, 0]],
    }
    batch = decode(body)
    np.testing.assert_array_equal(batch.matrix, EXPECTED)
    assert batch.ids == ["P1", "P2"]


def test_records_in_any_key_order() -> None:
    records = [{"id": 7, "GDF15": 3, "HPGD": 2, "LRIG1": 1}, {"HPGD": 0, "LRIG1": 4, "GDF15": 6.5, "id": 8}]
    batch = decode(records)
    np.testing.assert_array_equal(batch.matrix, EXPECTED)
    assert batch.ids == [7, 8]


def test_csv_with_header_crlf_and_bom() -> None:
    body = "\ufeffCase_ID,GDF15,LRIG1,HPGD,Other\r\nP1,3,1,2,z\r\nP2,6.5,4,0,z\r\n".encode()
    batch = decode(body, "text/csv; charset=utf-8")
    np.testing.assert_array_equal(batch.matrix, EXPECTED)
    assert batch.ids == ["P1", "P2"]


@pytest.mark.parametrize(
    "body",
    [
        [{"LRIG1": 1}],
        {"columns": ["LRIG1"], "data": [[1]]},
        b"LRIG1\n1\n",
    ],
)
def test_missing_genes_are_all_named(body: object) -> None:
    content_type = "text/csv" if isinstance(body, bytes) else "application/json"
    with pytest.raises(BadRequest, match="missing 2 of the model's 3 genes.*HPGD, GDF15") as info:
        decode(body, content_type)
    assert info.value.detail["missing_genes"] == ["HPGD", "GDF15"]


@pytest.mark.parametrize(
    "body",
    [
        [{"LRIG1": 1, "hpgd": 2, "Gdf15": 3}],
        {"columns": ["LRIG1", "hpgd", "Gdf15"], "data": [[1, 2, 3]]},
        b"LRIG1,hpgd,Gdf15\n1,2,3\n",
    ],
)
def test_genes_sent_in_another_case_get_a_hint(body: object) -> None:
    content_type = "text/csv" if isinstance(body, bytes) else "application/json"
    with pytest.raises(BadRequest, match="case-sensitive.*hpgd → HPGD, Gdf15 → GDF15"):
        decode(body, content_type)


@pytest.mark.parametrize(
    ("value", "what"),
    [("1.5", "str"), (True, "bool"), (None, "null"), ([1], "list"), ({"a": 1}, "dict")],
)
def test_non_numbers_are_named_by_row_and_gene(value: object, what: str) -> None:
    with pytest.raises(BadRequest, match=f"row 1, gene HPGD: expected a number, got {what}") as info:
        decode([{"LRIG1": 1, "HPGD": 2, "GDF15": 3}, {"LRIG1": 1, "HPGD": value, "GDF15": 3}])
    assert info.value.detail == {"row": 1, "gene": "HPGD"}


@pytest.mark.parametrize("text", ["nan", "inf", "-Infinity"])
def test_csv_nan_and_infinity_are_refused(text: str) -> None:
    with pytest.raises(BadRequest, match="row 0, gene GDF15: value is NaN or infinite"):
        decode(f"LRIG1,HPGD,GDF15\n1,2,{text}\n".encode(), "text/csv")


@pytest.mark.parametrize("number", [b"1e999", b"-1e999", b"9" * 400])
def test_enormous_json_numbers_are_refused(number: bytes) -> None:
    with pytest.raises(BadRequest, match=r"out of range - at `\$\[\.\.\.\]\[0\]\[1\]`|row 0, gene HPGD: value is NaN"):
        decode(b'{"inputs": [[1, ' + number + b", 2]]}")


def test_csv_bad_cells_are_named() -> None:
    with pytest.raises(BadRequest, match="row 1, gene HPGD: not a number"):
        decode(b"LRIG1,HPGD,GDF15\n1,2,3\n1,abc,3\n", "text/csv")
    with pytest.raises(BadRequest, match="row 0, gene LRIG1: empty value"):
        decode(b"LRIG1,HPGD,GDF15\n,2,3\n", "text/csv")
    with pytest.raises(BadRequest, match="row 0 has 2 fields but the header has 3"):
        decode(b"LRIG1,HPGD,GDF15\n1,2\n", "text/csv")


def test_duplicate_gene_columns_are_refused() -> None:
    with pytest.raises(BadRequest, match="more than once: HPGD"):
        decode(b"LRIG1,HPGD,GDF15,HPGD\n1,2,3,4\n", "text/csv")


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"", "application/json", "empty"),
        (b"   ", "text/csv", "empty"),
        (b"{not json", "application/json", "not valid JSON"),
        (b'{"inputs": []}', "application/json", "no rows"),
        (b"LRIG1,HPGD,GDF15\n", "text/csv", "no rows"),
        (b'"just a string"', "application/json", "JSON body must be"),
        (b"\xff\xfe", "text/csv", "not UTF-8"),
    ],
)
def test_malformed_bodies(body: bytes, content_type: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        decode(body, content_type)


def test_too_many_rows_is_413() -> None:
    with pytest.raises(PayloadTooLarge, match="3 rows; the limit is 2"):
        decode({"inputs": [[1, 2, 3]] * 3}, max_rows=2)


@pytest.mark.parametrize("content_type", [None, "", "application/xml", "application/x-www-form-urlencoded"])
def test_unsupported_content_type_is_415(content_type: str | None) -> None:
    with pytest.raises(UnsupportedMediaType, match="send application/json or text/csv"):
        codec.decode_request(b"x", content_type, GENES, IDS, 10)


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        (None, codec.JSON),
        ("*/*", codec.JSON),
        ("text/csv", codec.CSV),
        ("application/xml;q=1, text/csv;q=0.5", codec.CSV),
        ("text/csv;q=0.2, application/json;q=0.9", codec.JSON),
        ("text/*", codec.CSV),
    ],
)
def test_accept_negotiation(accept: str | None, chosen: str) -> None:
    assert codec.negotiate_accept(accept) == chosen


def test_unsupported_accept_is_406() -> None:
    with pytest.raises(NotAcceptable, match="cannot produce 'application/xml'"):
        codec.negotiate_accept("application/xml")
    with pytest.raises(NotAcceptable):
        codec.negotiate_accept("text/csv;q=0")


@pytest.fixture
def model() -> SignatureModel:
    manifest = synthetic_manifest("metagene_19", GENES)
    return SignatureModel(manifest, synthetic_tensors(manifest))


def test_json_response_carries_ids_outputs_groups_and_model(model: SignatureModel) -> None:
    predictions = model.predict(EXPECTED)
    doc = json.loads(codec.encode_response(model.manifest, predictions, ["P1", "P2"], codec.JSON))
    assert doc["model"] == "metagene_19" and doc["version"] == 1 and doc["output"] == "probability"
    assert [row["id"] for row in doc["predictions"]] == ["P1", "P2"]
    assert [row["probability"] for row in doc["predictions"]] == predictions.values.tolist()
    assert [row["risk_group"] for row in doc["predictions"]] == predictions.groups


def test_csv_response_round_trips_exact_values(model: SignatureModel) -> None:
    predictions = model.predict(EXPECTED)
    text = codec.encode_response(model.manifest, predictions, None, codec.CSV).decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [float(r["probability"]) for r in rows] == predictions.values.tolist()
    assert rows[0]["model"] == "metagene_19" and rows[0]["version"] == "1"
    assert "id" not in rows[0]
