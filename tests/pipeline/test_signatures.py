"""Signature sources, name sanitising and matching against the data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from genesig.artifact.manifest import NAME_PATTERN
from genesig.errors import DataError
from genesig.pipeline.signatures import (
    ALL,
    GeneSignature,
    artifact_name,
    default_signatures,
    match,
    read_signatures,
    select,
)

from .conftest import GO_BP, HALLMARK


def test_built_in_metagenes_and_all() -> None:
    signatures = {s.name: s for s in default_signatures()}
    assert list(signatures) == [
        "metagene_19",
        "metagene_10",
        "metagene_9",
        "metagene_4",
        "metagene_3",
        "metagene_21",
        ALL,
    ]
    assert signatures["metagene_19"].genes == ("LRIG1", "HPGD", "GDF15")
    assert len(signatures[ALL].genes) == 21


def test_hallmark_gmt() -> None:
    signatures = read_signatures(HALLMARK)
    assert len(signatures) == 50
    assert signatures[0].name == "HALLMARK_TNFA_SIGNALING_VIA_NFKB" and signatures[0].description.startswith("http")
    assert all(len(s.genes) >= 30 for s in signatures)


def test_go_gmt_names_become_unique_safe_artifact_names() -> None:
    signatures = read_signatures(GO_BP)
    assert len(signatures) == 6036
    names = [artifact_name(s.name) for s in signatures]
    assert len(set(names)) == len(names)
    assert all(re.match(NAME_PATTERN, n) for n in names)


@pytest.mark.parametrize(
    "name", ["positive regulation of 'T cell' (GO:0050870)", "a/b\\c", "..hidden", "x" * 300, "naïve B-cell"]
)
def test_artifact_names_are_safe_and_stable(name: str) -> None:
    assert re.match(NAME_PATTERN, artifact_name(name))
    assert artifact_name(name) == artifact_name(name)


def test_clean_names_are_kept() -> None:
    assert artifact_name("metagene_19") == "metagene_19"
    assert artifact_name("HALLMARK_HYPOXIA") == "HALLMARK_HYPOXIA"


def test_json_map_in_both_forms(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"a": ["G1", "G2", "G1"], "b": {"genes": ["G3"], "description": "d"}}))
    a, b = read_signatures(path)
    assert (a.name, a.genes, b.genes, b.description) == ("a", ("G1", "G2"), ("G3",), "d")


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("s.gmt", "only_a_name\n", "line 1: expected tab-separated"),
        ("s.gmt", "A\tdesc\t\t\n", "line 1: gene set 'A' lists no genes"),
        ("s.gmt", "", "no signatures"),
        ("s.json", "[1, 2]", "expected a JSON object"),
        ("s.json", '{"a": "G1"}', "'a' must be a list of gene names"),
        ("s.json", "{nope", "not valid JSON"),
        ("s.gmt", "A\td\tG1\nA\td\tG2\n", "'A' and 'A' share the name 'A'"),
        ("s.txt", "x", "unsupported signature file type"),
    ],
)
def test_bad_signature_files(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        read_signatures(path)


def test_select_by_name_or_all() -> None:
    signatures = default_signatures()
    assert select(signatures, None) == signatures, "no names: every signature"
    assert [s.name for s in select(signatures, [ALL])] == [ALL], "ALL is the all-genes signature's name"
    assert [s.name for s in select(signatures, ["metagene_3", "metagene_19"])] == ["metagene_19", "metagene_3"]
    with pytest.raises(DataError, match="no signature named 'nope'"):
        select(signatures, ["nope"])


def test_match_reports_missing_genes_and_skips_small_signatures() -> None:
    signature = GeneSignature("s", ("A", "B", "C", "D"))
    matched = match(signature, ["A", "C", "Z"], min_genes=2)
    assert (matched.present, matched.missing, matched.skip_reason) == (["A", "C"], ["B", "D"], None)
    skipped = match(signature, ["A"], min_genes=2)
    assert skipped.skip_reason == "only 1 of 4 genes (25%) are in the data (minimum 2 genes); missing B, C, D"
    low_coverage = match(signature, ["A", "C"], min_genes=2, min_coverage=0.6)
    assert low_coverage.skip_reason == (
        "only 2 of 4 genes (50%) are in the data (minimum 2 genes and 60% of the signature); missing B, D"
    )


def test_the_readme_example_name() -> None:
    assert (
        artifact_name("positive regulation of 'T cell' (GO:0050870)")
        == "positive_regulation_of_T_cell_GO_0050870-aec75ff1"
    )
