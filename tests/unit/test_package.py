"""Artifact packing and verification: round trip, immutability, checksums, shapes and hostile archives."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import tarfile
from collections.abc import Callable
from pathlib import Path

import msgspec
import numpy as np
import pytest
import safetensors.numpy

from genesig.artifact import extract_artifact, load_model_dir, read_artifact, write_artifact
from genesig.artifact.manifest import MANIFEST_FILENAME, WEIGHTS_FILENAME, decode_manifest, encode_manifest
from genesig.artifact.package import MAX_EXTRACTED_BYTES, MAX_MANIFEST_BYTES
from genesig.artifact.synthetic import synthetic_manifest, synthetic_tensors
from genesig.errors import ArtifactError, InsufficientStorage
from tests.tarballs import add_member


def test_round_trip_keeps_manifest_and_weights(make_archive: Callable[..., Path], genes: list[str]) -> None:
    archive = make_archive("metagene_19", hidden_units=8, seed=3)
    assert archive.name == "metagene_19-v1.tar.gz"
    model = read_artifact(archive)
    assert model.genes == genes
    assert model.manifest.model.kind == "mlp"
    expected = synthetic_tensors(model.manifest, seed=3)
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == sorted([MANIFEST_FILENAME, WEIGHTS_FILENAME])
        weights = safetensors.numpy.load(tar.extractfile(WEIGHTS_FILENAME).read())  # type: ignore[union-attr]
    for name, array in expected.items():
        np.testing.assert_array_equal(weights[name], array)


def test_same_model_packs_to_the_same_bytes(tmp_path: Path, genes: list[str]) -> None:
    manifest = synthetic_manifest("sig", genes)
    a = write_artifact(manifest, synthetic_tensors(manifest), tmp_path / "a")
    b = write_artifact(manifest, synthetic_tensors(manifest), tmp_path / "b")
    assert a.read_bytes() == b.read_bytes()


def test_existing_artifact_is_never_overwritten(tmp_path: Path, genes: list[str]) -> None:
    manifest = synthetic_manifest("sig", genes)
    path = write_artifact(manifest, synthetic_tensors(manifest), tmp_path)
    before = path.read_bytes()
    other = synthetic_manifest("sig", genes, seed=9)
    with pytest.raises(FileExistsError, match="immutable"):
        write_artifact(other, synthetic_tensors(other, seed=9), tmp_path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "no temporary file left behind"


def test_writer_refuses_weights_that_disagree_with_the_genes(tmp_path: Path, genes: list[str]) -> None:
    manifest = synthetic_manifest("sig", genes)
    tensors = synthetic_tensors(synthetic_manifest("sig", genes + ["EXTRA"]))
    with pytest.raises(ArtifactError, match=r"shape \[1, 4\].*3 genes"):
        write_artifact(manifest, tensors, tmp_path)
    assert not list(tmp_path.glob("*.tar.gz"))


def test_writer_refuses_non_finite_weights(tmp_path: Path, genes: list[str]) -> None:
    manifest = synthetic_manifest("sig", genes)
    tensors = synthetic_tensors(manifest)
    tensors["linear.weight"][0, 1] = np.nan
    with pytest.raises(ArtifactError, match="NaN or infinite"):
        write_artifact(manifest, tensors, tmp_path)


def test_tampered_weights_fail_the_checksum(make_model_dir: Callable[..., Path]) -> None:
    model_dir = make_model_dir()
    weights = model_dir / WEIGHTS_FILENAME
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="does not match the sha256"):
        load_model_dir(model_dir)


def _rewrite_manifest(model_dir: Path, **changes: object) -> None:
    manifest = decode_manifest((model_dir / MANIFEST_FILENAME).read_bytes())
    (model_dir / MANIFEST_FILENAME).write_bytes(encode_manifest(msgspec.structs.replace(manifest, **changes)))


def _replace_weights(model_dir: Path, data: bytes) -> None:
    """Swap the weights file and record its real checksum, so only the content check can catch it."""
    (model_dir / WEIGHTS_FILENAME).write_bytes(data)
    manifest = decode_manifest((model_dir / MANIFEST_FILENAME).read_bytes())
    entry = msgspec.structs.replace(
        manifest.files[WEIGHTS_FILENAME], sha256=hashlib.sha256(data).hexdigest(), bytes=len(data)
    )
    _rewrite_manifest(model_dir, files={WEIGHTS_FILENAME: entry})


def test_manifest_genes_disagreeing_with_weight_shapes_are_refused(make_model_dir: Callable[..., Path]) -> None:
    model_dir = make_model_dir()
    _rewrite_manifest(
        model_dir,
        genes=["A", "B", "C", "D"],
        preprocessing=msgspec.structs.replace(
            decode_manifest((model_dir / MANIFEST_FILENAME).read_bytes()).preprocessing,
            center=[0.0] * 4,
            scale=[1.0] * 4,
        ),
    )
    with pytest.raises(ArtifactError, match=r"shape \[1, 3\] but the manifest's 4 genes"):
        load_model_dir(model_dir)


def test_non_finite_weights_in_an_artifact_are_refused(make_model_dir: Callable[..., Path]) -> None:
    model_dir = make_model_dir()
    weights = safetensors.numpy.load((model_dir / WEIGHTS_FILENAME).read_bytes())
    weights["linear.bias"] = np.array([np.inf], dtype=np.float32)
    _replace_weights(model_dir, safetensors.numpy.save(weights))
    with pytest.raises(ArtifactError, match="'linear.bias' contains NaN"):
        load_model_dir(model_dir)


def test_integer_weights_are_refused(make_model_dir: Callable[..., Path]) -> None:
    model_dir = make_model_dir()
    weights = safetensors.numpy.load((model_dir / WEIGHTS_FILENAME).read_bytes())
    weights["linear.bias"] = np.array([1], dtype=np.int64)
    _replace_weights(model_dir, safetensors.numpy.save(weights))
    with pytest.raises(ArtifactError, match="dtype int64"):
        load_model_dir(model_dir)


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch PWNED",))


def test_a_pickle_where_weights_belong_is_refused_and_never_run(
    make_model_dir: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    model_dir = make_model_dir()
    _replace_weights(model_dir, pickle.dumps(_Payload()))
    with pytest.raises(ArtifactError, match="not a valid safetensors file"):
        load_model_dir(model_dir)
    assert not (tmp_path / "PWNED").exists()


def test_missing_weights_file_is_named(make_model_dir: Callable[..., Path]) -> None:
    model_dir = make_model_dir()
    (model_dir / WEIGHTS_FILENAME).unlink()
    with pytest.raises(ArtifactError, match=f"lacks {WEIGHTS_FILENAME}"):
        load_model_dir(model_dir)


def test_missing_manifest_is_named(make_model_dir: Callable[..., Path]) -> None:
    model_dir = make_model_dir()
    (model_dir / MANIFEST_FILENAME).unlink()
    with pytest.raises(ArtifactError, match=f"no {MANIFEST_FILENAME}"):
        load_model_dir(model_dir)


# --- hostile archives ----------------------------------------------------------------------------------


def _archive(tmp_path: Path, build: Callable[[tarfile.TarFile], None]) -> Path:
    path = tmp_path / "hostile.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        build(tar)
    return path


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda t: add_member(t, "/etc/evil"), "unsafe path"),
        (lambda t: add_member(t, "../evil"), "unsafe path"),
        (lambda t: add_member(t, "model/../../evil"), "unsafe path"),
        (lambda t: add_member(t, "link", b"", type=tarfile.SYMTYPE, linkname="/etc/passwd"), "is a link"),
        (lambda t: add_member(t, "hard", b"", type=tarfile.LNKTYPE, linkname="/etc/passwd"), "is a link"),
        (lambda t: add_member(t, "dev", b"", type=tarfile.CHRTYPE), "not a regular file"),
        (lambda t: add_member(t, "fifo", b"", type=tarfile.FIFOTYPE), "not a regular file"),
    ],
)
def test_hostile_members_are_refused_and_nothing_is_written(
    tmp_path: Path, build: Callable[[tarfile.TarFile], None], message: str
) -> None:
    archive = _archive(tmp_path, build)
    dest = tmp_path / "out" / "model"
    with pytest.raises(ArtifactError, match=message):
        extract_artifact(archive, dest)
    assert not dest.exists()
    assert not list((tmp_path / "out").iterdir()), "no staging folder left behind"
    assert not (tmp_path / "evil").exists()


def test_tar_bomb_is_refused(tmp_path: Path) -> None:
    archive = _archive(tmp_path, lambda t: add_member(t, "big", b"\0" * 1_000_000))
    with pytest.raises(ArtifactError, match="more than 1000 bytes"):
        extract_artifact(archive, tmp_path / "model", max_bytes=1000)
    assert not (tmp_path / "model").exists()


def test_too_many_members_are_refused(tmp_path: Path) -> None:
    archive = _archive(tmp_path, lambda t: [add_member(t, f"f{i}") for i in range(100)])  # type: ignore[func-returns-value]
    with pytest.raises(ArtifactError, match="more than 64 members"):
        extract_artifact(archive, tmp_path / "model")


def test_a_full_disk_is_not_blamed_on_the_artifact(
    make_archive: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_space(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    archive = make_archive()
    monkeypatch.setattr(tarfile.TarFile, "extractall", no_space)
    with pytest.raises(InsufficientStorage, match="no space left to extract"):
        extract_artifact(archive, tmp_path / "out" / "model")
    assert not list((tmp_path / "out").iterdir()), "no staging folder left behind"


def test_not_a_tarball_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "x.tar.gz"
    archive.write_bytes(b"this is not gzip")
    with pytest.raises(ArtifactError, match="cannot read artifact"):
        extract_artifact(archive, tmp_path / "model")


def test_truncated_archive_is_refused(make_archive: Callable[..., Path], tmp_path: Path) -> None:
    archive = make_archive()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(archive.read_bytes()[:200])
    with pytest.raises(ArtifactError, match="cannot read artifact"):
        extract_artifact(cut, tmp_path / "model")
    assert not (tmp_path / "model").exists()


def test_manifest_is_valid_json_for_other_tools(make_model_dir: Callable[..., Path]) -> None:
    doc = json.loads((make_model_dir() / MANIFEST_FILENAME).read_text())
    assert doc["files"][WEIGHTS_FILENAME]["sha256"]
    assert doc["memory_estimate_bytes"] > 0


# SageMaker extracts the tarball itself, so the container sees a folder that our extraction never checked.
def test_a_linked_manifest_or_weights_file_is_refused_even_pointing_at_valid_bytes(
    make_model_dir: Callable[..., Path], tmp_path: Path
) -> None:
    for fname in (MANIFEST_FILENAME, WEIGHTS_FILENAME):
        model_dir = make_model_dir(f"linked_{fname.split('.')[0]}")
        outside = tmp_path / f"outside-{fname}"
        (model_dir / fname).rename(outside)
        (model_dir / fname).symlink_to(outside)
        with pytest.raises(ArtifactError, match=f"{fname} is a link"):
            load_model_dir(model_dir)


def test_an_oversized_manifest_is_refused_before_it_is_read(make_model_dir: Callable[..., Path]) -> None:
    model_dir = make_model_dir()
    with open(model_dir / MANIFEST_FILENAME, "ab") as fh:
        fh.truncate(MAX_MANIFEST_BYTES + 1)
    with pytest.raises(ArtifactError, match="over the 16777216-byte limit"):
        load_model_dir(model_dir)


def test_files_declared_over_the_size_limit_are_refused_before_hashing(make_model_dir: Callable[..., Path]) -> None:
    model_dir = make_model_dir()
    doc = json.loads((model_dir / MANIFEST_FILENAME).read_text())
    doc["files"][WEIGHTS_FILENAME]["bytes"] = MAX_EXTRACTED_BYTES + 1
    (model_dir / MANIFEST_FILENAME).write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match="files total 268435457 bytes"):
        load_model_dir(model_dir)
