"""Write, extract and verify model artifacts (``<name>-v<N>.tar.gz`` = manifest + safetensors weights).

Weights are safetensors: a JSON header plus raw little-endian arrays, so loading
never unpickles anything and the same file opens in numpy and torch.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import mmap
import os
import shutil
import tarfile
import tempfile
import time
import zlib
from collections.abc import Mapping
from pathlib import Path

import msgspec
import numpy as np
import safetensors.numpy

from genesig.artifact.manifest import (
    MANIFEST_FILENAME,
    WEIGHTS_FILENAME,
    FileEntry,
    Manifest,
    decode_manifest,
    encode_manifest,
)
from genesig.artifact.model import SignatureModel, check_tensors
from genesig.errors import ArtifactError, InsufficientStorage, ModelNotFound, ModelUnreadable

# Generous for kilobyte-sized signature models; a tar bomb stops here.
MAX_EXTRACTED_BYTES = 256 * 1024 * 1024
# Write errors that mean "this disk is full" (or a file-size limit), not "this artifact is broken".
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
MAX_MEMBERS = 64
# A manifest lists genes and metrics: ~0.4 MB for 20,000 genes.
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
# Marks publish_bytes' hidden temporary files; one older than STALE_PARTIAL_S belongs to a killed publish.
PARTIAL_MARK = ".partial-"
STALE_PARTIAL_S = 3600.0
# Extracted folders are readable by any user (a container runs as another uid than the one that extracted them);
# models are not secrets, and SageMaker hands the container its model folders the same way.
DIR_MODE = 0o755
FILE_MODE = 0o644
_COPY_CHUNK = 1 << 20
# What an opened model costs a process besides its weights (measured: ~5 KiB and ~240 B per gene; rounded up):
# the parsed manifest, the model object and its arrays' headers, and per gene the name and its place in the lookups.
OPENED_BASE_BYTES = 8 * 1024
OPENED_PER_GENE_BYTES = 256
# Weights at least this large are memory-mapped (float64 as stored: every process shares one copy in the page
# cache); smaller ones are read, since a mapping costs whole pages.
MAP_MIN_BYTES = 64 * 1024
_SAFETENSORS_HEADER_MAX = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def opened_memory(manifest: Manifest, *, mapped: bool) -> tuple[int, int]:
    """Memory an opened model costs: (private to each process that opens it, shared by all of them). Shared is its
    memory-mapped weights (``mapped``: float64 and at least ``MAP_MIN_BYTES``, see :func:`weights_mappable`); other
    weights are read into private float64 copies (twice the bytes of a float32 file)."""
    weights = sum(entry.bytes for entry in manifest.files.values()) if manifest.files else 0
    private = OPENED_BASE_BYTES + OPENED_PER_GENE_BYTES * len(manifest.genes)
    if mapped:
        return private, weights
    return private + 2 * weights, 0


def build_manifest(manifest: Manifest, tensors: Mapping[str, np.ndarray]) -> tuple[Manifest, bytes]:
    """Check ``tensors`` against ``manifest`` and return the manifest completed with file checksums and memory
    estimate, plus the serialised weights."""
    check_tensors(manifest, tensors)
    weights = safetensors.numpy.save({k: np.ascontiguousarray(v) for k, v in sorted(tensors.items())})
    complete = msgspec.structs.replace(
        manifest, files={WEIGHTS_FILENAME: FileEntry(sha256=sha256_bytes(weights), bytes=len(weights))}
    )
    mapped = len(weights) >= MAP_MIN_BYTES and all(np.asarray(t).dtype == np.float64 for t in tensors.values())
    private, shared = opened_memory(complete, mapped=mapped)
    return msgspec.structs.replace(complete, memory_estimate_bytes=private + shared), weights


def _tar_member(name: str, data: bytes) -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = 0  # reproducible bytes: the same model always packs to the same sha256
    info.uname = info.gname = ""
    return info, io.BytesIO(data)


def _pack(manifest: Manifest, weights: bytes) -> bytes:
    """The artifact's bytes: a gzipped tar of the manifest and the weights, the same bytes for the same model."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for name, data in ((MANIFEST_FILENAME, encode_manifest(manifest)), (WEIGHTS_FILENAME, weights)):
            tar.addfile(*_tar_member(name, data))
    return buffer.getvalue()


def write_artifact(manifest: Manifest, tensors: Mapping[str, np.ndarray], out_dir: Path) -> Path:
    """Write ``<out_dir>/<name>-v<version>.tar.gz`` atomically and never over an existing file."""
    complete, weights = build_manifest(manifest, tensors)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / complete.artifact_name
    if target.exists():
        raise FileExistsError(f"{target} already exists; artifact names are immutable, bump the version")
    publish_bytes(_pack(complete, weights), target)
    return target


def with_version(archive: Path, version: int) -> tuple[Manifest, bytes]:
    """The verified artifact again as ``version``: the registry assigns versions when it registers, so a model
    trained before it knew its version is renumbered. Only the manifest changes; the weights are the same bytes."""
    with tempfile.TemporaryDirectory(prefix="genesig-artifact-") as tmp:
        model = load_model_dir(extract_artifact(archive, Path(tmp) / "model"))
        weights = (Path(tmp) / "model" / WEIGHTS_FILENAME).read_bytes()
    manifest = msgspec.structs.replace(model.manifest, version=version)
    return manifest, _pack(manifest, weights)


def publish_bytes(data: bytes, target: Path) -> None:
    """Create ``target`` with ``data`` all at once: a reader sees nothing or the whole file; existing files stay.

    The bytes go to a hidden ``.NAME.partial-*`` file first; one whose process was killed is left behind for
    :func:`remove_stale_partials`.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}{PARTIAL_MARK}", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.link(tmp, target)  # fails if target exists: no overwrite, even under a race
    finally:
        os.unlink(tmp)


def remove_stale_partials(folder: Path, older_than_s: float = STALE_PARTIAL_S) -> list[str]:
    """Delete the hidden files of publishes that never finished (their process was killed) once they are older
    than ``older_than_s``: a live publish is seconds old. Returns the names removed."""
    removed = []
    now = time.time()
    for path in folder.glob(f".*{PARTIAL_MARK}*"):
        try:
            if path.is_file() and now - path.stat().st_mtime > older_than_s:
                path.unlink()
                removed.append(path.name)
        except FileNotFoundError:  # another sync removed it first
            continue
    return removed


def _check_member(member: tarfile.TarInfo) -> None:
    name = member.name
    parts = Path(name).parts
    if name.startswith("/") or ".." in parts or (not parts and not member.isdir()):
        raise ArtifactError(f"unsafe path in artifact: {name!r} (absolute or escaping the model folder)")
    if member.issym() or member.islnk():
        raise ArtifactError(f"artifact member {name!r} is a link; links are not allowed")
    if not (member.isfile() or member.isdir()):
        raise ArtifactError(f"artifact member {name!r} is not a regular file or folder")


def _make_folders(root: Path, parts: tuple[str, ...]) -> None:
    folder = root
    for part in parts:
        folder = folder / part
        if not folder.is_dir() or folder.is_symlink():
            folder.mkdir()  # fails on a file or link of that name: nothing is ever written through one
            os.chmod(folder, DIR_MODE)  # whatever the umask


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, root: Path) -> None:
    """Create one checked member under ``root``: folders 0755, files 0644, never through an existing path or link.

    Done by hand rather than with ``extractall(filter="data")``: that filter first shipped in Python 3.11.4, and
    Debian 12's own Python is 3.11.2. Our member checks are stricter than the filter anyway (regular files and
    folders only).
    """
    parts = Path(member.name).parts
    target = root.joinpath(*parts)
    _make_folders(root, parts if member.isdir() else parts[:-1])
    if member.isdir():
        return
    source = tar.extractfile(member)
    assert source is not None, "regular members always have data"
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    except FileExistsError:
        raise ArtifactError(f"artifact member {member.name!r} appears more than once") from None
    with os.fdopen(fd, "wb") as out:
        remaining = member.size
        while remaining > 0:
            block = source.read(min(_COPY_CHUNK, remaining))
            if not block:
                raise ArtifactError(f"artifact member {member.name!r} is truncated")
            out.write(block)
            remaining -= len(block)
    os.chmod(target, FILE_MODE)  # whatever the umask


def extract_artifact(archive: Path, dest: Path, *, max_bytes: int = MAX_EXTRACTED_BYTES) -> Path:
    """Extract a ``.tar.gz`` into ``dest`` (which must not exist), refusing unsafe members and tar bombs.

    Extraction goes to a sibling temporary folder renamed into place, so ``dest``
    either holds the complete artifact or does not exist.
    """
    if dest.exists():
        raise FileExistsError(f"{dest} already exists")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        os.chmod(staging, DIR_MODE)
        try:
            with tarfile.open(archive, mode="r:gz") as tar:
                members = []
                total = 0
                for member in tar:
                    _check_member(member)
                    members.append(member)
                    total += member.size
                    if len(members) > MAX_MEMBERS:
                        raise ArtifactError(f"artifact has more than {MAX_MEMBERS} members")
                    if total > max_bytes:
                        raise ArtifactError(f"artifact extracts to more than {max_bytes} bytes")
                for member in members:
                    _write_member(tar, member, staging)
        except OSError as exc:
            if exc.errno in NO_SPACE:  # our disk, not the artifact: the caller may free space and retry
                raise InsufficientStorage(
                    f"no space left to extract {archive.name} into {dest.parent}: {exc.strerror}"
                ) from None
            raise ArtifactError(f"cannot read artifact {archive.name}: {exc}") from None
        except (tarfile.TarError, EOFError, zlib.error) as exc:
            raise ArtifactError(f"cannot read artifact {archive.name}: {exc}") from None
        staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest


def _unreadable(path: Path) -> ModelUnreadable:
    return ModelUnreadable(
        f"the model server (uid {os.getuid()}) may not read {path}: make the model folder readable by that user "
        "(chmod -R a+rX on it) or run the server as the folder's owner (docker run --user)"
    )


def check_model_folder(model_dir: Path) -> Path:
    """``model_dir`` as a folder the server can read: 404 when missing, 403 when permissions deny it."""
    try:
        if not model_dir.is_dir():
            raise ModelNotFound(f"model folder {model_dir} does not exist or is not a folder")
        os.listdir(model_dir)
    except PermissionError:
        raise _unreadable(model_dir) from None
    return model_dir


def read_manifest(model_dir: Path) -> Manifest:
    """The folder's manifest. On SageMaker the platform extracts the tarball, so our extraction's checks did not
    run: a manifest that is a link (to anywhere) or too big to be one is refused before it is read."""
    path = model_dir / MANIFEST_FILENAME
    try:
        return _read_manifest(path)
    except PermissionError as exc:
        raise _unreadable(Path(exc.filename or path)) from None


def _read_manifest(path: Path) -> Manifest:
    if path.is_symlink():
        raise ArtifactError(f"{MANIFEST_FILENAME} is a link; links are not allowed")
    if not path.is_file():
        raise ArtifactError(f"model folder has no {MANIFEST_FILENAME}")
    if (size := path.stat().st_size) > MAX_MANIFEST_BYTES:
        raise ArtifactError(f"{MANIFEST_FILENAME} is {size} bytes, over the {MAX_MANIFEST_BYTES}-byte limit")
    return decode_manifest(path.read_bytes())


def load_model_dir(model_dir: Path, *, map_weights: bool = False) -> SignatureModel:
    """Verify an extracted artifact (schema, sha256 of every file, tensor shapes and values) and load it; with
    ``map_weights``, float64 weights of at least ``MAP_MIN_BYTES`` are memory-mapped rather than read."""
    try:
        return _load_model_dir(model_dir, map_weights)
    except PermissionError as exc:
        raise _unreadable(Path(exc.filename or model_dir)) from None


def _float64_layout(head: bytes | mmap.mmap, file_size: int) -> dict[str, tuple[list[int], int, int]] | None:
    """Each tensor's shape, element count and offset in a safetensors file (``head``: its first bytes, header
    included) if all are float64, else None. The format: an 8-byte little-endian header size, a JSON header naming
    each tensor's dtype, shape and byte range, then the data."""
    try:
        size = int.from_bytes(head[:8], "little")
        if not 2 <= size <= min(_SAFETENSORS_HEADER_MAX, file_size - 8, len(head) - 8):
            return None
        header = msgspec.json.decode(head[8 : 8 + size])
        start, layout = 8 + size, {}
        for name, spec in header.items():
            if name == "__metadata__":
                continue
            shape = [int(d) for d in spec["shape"]]
            first, last = (int(o) for o in spec["data_offsets"])
            count = int(np.prod(shape)) if shape else 1
            if spec["dtype"] != "F64" or last - first != 8 * count or not 0 <= first <= last <= file_size - start:
                return None
            layout[name] = (shape, count, start + first)
        return layout
    except (msgspec.DecodeError, KeyError, TypeError, ValueError, AttributeError):
        return None


def weights_mappable(model_dir: Path) -> bool:
    """Whether a worker will memory-map this folder's weights (float64, at least ``MAP_MIN_BYTES``)."""
    path = model_dir / WEIGHTS_FILENAME
    try:
        file_size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(_SAFETENSORS_HEADER_MAX + 8)
    except OSError:
        return False
    return file_size >= MAP_MIN_BYTES and _float64_layout(head, file_size) is not None


def _mapped_tensors(path: Path) -> dict[str, np.ndarray] | None:
    """Read-only float64 views over a memory map of a safetensors file, or None when it holds anything else (then
    the caller reads it with safetensors)."""
    with open(path, "rb") as fh:
        buffer = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    layout = _float64_layout(buffer, len(buffer))
    if layout is None:
        buffer.close()
        return None
    return {
        name: np.frombuffer(buffer, dtype="<f8", count=count, offset=offset).reshape(shape)
        for name, (shape, count, offset) in layout.items()
    }


def _load_model_dir(model_dir: Path, map_weights: bool = False) -> SignatureModel:
    manifest = read_manifest(model_dir)
    if (total := sum(entry.bytes for entry in manifest.files.values())) > MAX_EXTRACTED_BYTES:
        raise ArtifactError(f"the artifact's files total {total} bytes, over the {MAX_EXTRACTED_BYTES}-byte limit")
    for fname, entry in manifest.files.items():
        path = model_dir / fname
        if path.is_symlink():
            raise ArtifactError(f"{fname} is a link; links are not allowed")
        if not path.is_file():
            raise ArtifactError(f"model folder lacks {fname}, which the manifest lists")
        if path.stat().st_size != entry.bytes or sha256_file(path) != entry.sha256:
            raise ArtifactError(f"{fname} does not match the sha256 recorded in the manifest")
    weights = model_dir / WEIGHTS_FILENAME
    tensors = None
    listed = manifest.files.get(WEIGHTS_FILENAME)
    if map_weights and listed is not None and listed.bytes >= MAP_MIN_BYTES:
        tensors = _mapped_tensors(weights)  # None unless every tensor is float64
    if tensors is None:
        try:
            tensors = safetensors.numpy.load(weights.read_bytes())
        except Exception as exc:  # safetensors raises its own error types for malformed headers
            raise ArtifactError(f"{WEIGHTS_FILENAME} is not a valid safetensors file: {exc}") from None
    return SignatureModel(manifest, tensors)


def read_artifact(archive: Path) -> SignatureModel:
    """Extract to a temporary folder, verify and load; nothing is left on disk."""
    with tempfile.TemporaryDirectory(prefix="genesig-artifact-") as tmp:
        return load_model_dir(extract_artifact(archive, Path(tmp) / "model"))
