"""The manifest schema: round trip, version gate and cross-field rules."""

from __future__ import annotations

import json

import msgspec
import pytest

from genesig.artifact.manifest import (
    MANIFEST_FILENAME,
    FileEntry,
    Manifest,
    decode_manifest,
    encode_manifest,
)
from genesig.artifact.synthetic import synthetic_manifest
from genesig.errors import ArtifactError


def complete(manifest: Manifest) -> Manifest:
    return msgspec.structs.replace(
        manifest, files={"weights.safetensors": FileEntry(sha256="0" * 64, bytes=10)}, memory_estimate_bytes=1
    )


@pytest.fixture
def manifest(genes: list[str]) -> Manifest:
    return complete(synthetic_manifest("metagene_19", genes))


def test_round_trip(manifest: Manifest) -> None:
    assert decode_manifest(encode_manifest(manifest)) == manifest


def test_unknown_major_version_is_refused_with_a_clear_message(manifest: Manifest) -> None:
    doc = json.loads(encode_manifest(manifest))
    doc["schema_version"] = "2.0"
    with pytest.raises(ArtifactError, match=r"schema_version '2.0' is not supported.*reads 1\.x"):
        decode_manifest(json.dumps(doc).encode())


def test_newer_minor_version_is_read(manifest: Manifest) -> None:
    doc = json.loads(encode_manifest(manifest))
    doc["schema_version"] = "1.7"
    doc["a_field_from_the_future"] = True
    assert decode_manifest(json.dumps(doc).encode()).schema_version == "1.7"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"genes": ["A", "B", "A"]}, "more than once: A"),
        ({"genes": []}, "no genes"),
        ({"preprocessing": {"log1p": True, "center": [0.0], "scale": [1.0, 1.0, 1.0]}}, "center has 1 values"),
        ({"preprocessing": {"log1p": True, "center": [0, 0, 0], "scale": [1, 0, 1]}}, "scale must be positive"),
        (
            {
                "output": {
                    "name": "risk_score",
                    "description": "",
                    "risk_groups": {"cutpoints": [0], "labels": ["a", "b"]},
                }
            },
            "produces 'probability'",
        ),
        (
            {
                "output": {
                    "name": "probability",
                    "description": "",
                    "risk_groups": {"cutpoints": [0.6, 0.3], "labels": ["a", "b", "c"]},
                }
            },
            "ascending",
        ),
        (
            {
                "output": {
                    "name": "probability",
                    "description": "",
                    "risk_groups": {"cutpoints": [0.5], "labels": ["a"]},
                }
            },
            "one label more",
        ),
        ({"files": {}}, "does not list weights.safetensors"),
        (
            {
                "files": {
                    "../x": {"sha256": "0" * 64, "bytes": 1},
                    "weights.safetensors": {"sha256": "0" * 64, "bytes": 1},
                }
            },
            "invalid file name",
        ),
        ({"files": {"weights.safetensors": {"sha256": "xyz", "bytes": 1}}}, "not a lowercase sha256"),
        ({"memory_estimate_bytes": 0}, "must be positive"),
        ({"model": {"kind": "mlp", "hidden_units": 0}}, "mlp model needs"),
    ],
)
def test_cross_field_rules(manifest: Manifest, change: dict[str, object], message: str) -> None:
    doc = json.loads(encode_manifest(manifest))
    doc.update(change)
    with pytest.raises(ArtifactError, match=message):
        decode_manifest(json.dumps(doc).encode())


@pytest.mark.parametrize("name", ["has space", "../up", "", "x" * 200, "quote'd"])
def test_artifact_names_are_safe_object_names(manifest: Manifest, name: str) -> None:
    doc = json.loads(encode_manifest(manifest))
    doc["name"] = name
    with pytest.raises(ArtifactError, match="name"):
        decode_manifest(json.dumps(doc).encode())


def test_type_errors_name_the_field(manifest: Manifest) -> None:
    doc = json.loads(encode_manifest(manifest))
    doc["version"] = "three"
    with pytest.raises(ArtifactError, match=r"\$\.version"):
        decode_manifest(json.dumps(doc).encode())


def test_not_json_is_refused() -> None:
    with pytest.raises(ArtifactError, match="not a valid manifest"):
        decode_manifest(b"\x80not json")


def test_manifest_file_name_avoids_the_mms_trap() -> None:
    assert MANIFEST_FILENAME.lower() != "manifest.json"


def test_a_1_0_manifest_without_coverage_or_training_is_read(manifest: Manifest) -> None:
    doc = json.loads(encode_manifest(manifest))
    doc["schema_version"] = "1.0"
    doc.pop("training", None)
    doc["signature"].pop("coverage", None)
    old = decode_manifest(json.dumps(doc).encode())
    assert old.training is None and old.signature.coverage is None
