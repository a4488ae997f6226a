"""Artifact packing and verification: round trip, immutability, checksums, shapes and hostile archives."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import pickle
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import msgspec
import numpy as np
import pytest
import safetensors.numpy

from genesig.artifact import extract_artifact, load_model_dir, read_artifact, write_artifact
from genesig.artifact.manifest import MANIFEST_FILENAME, WEIGHTS_FILENAME, decode_manifest, encode_manifest
from genesig.artifact.package import MAX_EXTRACTED_BYTES, MAX_MANIFEST_BYTES, check_model_folder
from genesig.artifact.synthetic import synthetic_manifest, synthetic_tensors
from genesig.errors import ArtifactError, InsufficientStorage, ModelNotFound, ModelUnreadable
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
    real_open = os.open

    def no_space(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if flags & os.O_CREAT and str(path).startswith(str(tmp_path / "out")):  # creating a file: the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    archive = make_archive()
    monkeypatch.setattr(os, "open", no_space)
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


def test_extraction_works_without_the_tarfile_data_filter(
    make_archive: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python 3.11.0-3.11.3 (Debian 12's python3 is 3.11.2) have no ``filter=`` argument and no data_filter."""

    def no_filter(self: tarfile.TarFile, *args: object, filter: object = None, **kwargs: object) -> None:  # noqa: A002
        if filter is not None:
            raise TypeError("extractall() got an unexpected keyword argument 'filter'")
        raise AssertionError("extraction must not rely on tarfile's own extraction")

    monkeypatch.setattr(tarfile.TarFile, "extractall", no_filter)
    monkeypatch.setattr(tarfile.TarFile, "extract", no_filter)
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    model_dir = extract_artifact(make_archive(), tmp_path / "model")
    assert load_model_dir(model_dir).manifest.name == "metagene_19"


def test_extracted_folders_are_readable_by_any_user_whatever_the_umask(
    make_archive: Callable[..., Path], tmp_path: Path
) -> None:
    archive = make_archive()
    old = os.umask(0o077)
    try:
        model_dir = extract_artifact(archive, tmp_path / "cache" / "model")
    finally:
        os.umask(old)
    assert stat.S_IMODE(model_dir.stat().st_mode) == 0o755, "a container running as another user must enter it"
    for path in model_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path.name


def test_a_dot_folder_entry_is_accepted_and_a_repeated_member_refused(tmp_path: Path) -> None:
    good, repeated = tmp_path / "dot.tar.gz", tmp_path / "twice.tar.gz"
    with tarfile.open(good, "w:gz") as tar:
        tar.addfile(_dir_member("."))  # what `tar -C /opt/ml/model -czf model.tar.gz .` writes first
        tar.addfile(*_file_member("./sub/a.txt", b"a"))
    extract_artifact(good, tmp_path / "dot")
    assert (tmp_path / "dot" / "sub" / "a.txt").read_bytes() == b"a"
    with tarfile.open(repeated, "w:gz") as tar:
        tar.addfile(*_file_member("a.txt", b"a"))
        tar.addfile(*_file_member("a.txt", b"b"))
    with pytest.raises(ArtifactError, match="appears more than once"):
        extract_artifact(repeated, tmp_path / "twice")
    assert not (tmp_path / "twice").exists()


def _dir_member(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info


def _file_member(name: str, data: bytes) -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, io.BytesIO(data)


def test_an_unreadable_model_folder_names_the_path_and_the_fix(
    make_model_dir: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir = make_model_dir()
    real_is_symlink = Path.is_symlink

    def denied(self: Path) -> bool:
        if self.parent == model_dir:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_is_symlink(self)

    monkeypatch.setattr(Path, "is_symlink", denied)
    with pytest.raises(ModelUnreadable, match=r"may not read .*genesig-model.json: make the model folder readable"):
        load_model_dir(model_dir)


def test_check_model_folder_tells_missing_from_unreadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelNotFound, match="does not exist"):
        check_model_folder(tmp_path / "nothing")
    monkeypatch.setattr(os, "listdir", lambda path: (_ for _ in ()).throw(PermissionError(errno.EACCES, "denied")))
    with pytest.raises(ModelUnreadable, match="chmod -R a\\+rX"):
        check_model_folder(tmp_path)
