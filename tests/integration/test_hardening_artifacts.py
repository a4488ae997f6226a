"""Hostile or broken artifacts in the model prefix, asked for through the local endpoint in front of the real server:
each is refused with an error naming the problem, nothing is written outside the cache, nothing is executed, and a
good model keeps serving."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import signal
import tarfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from genesig.artifact.synthetic import write_synthetic_artifact
from genesig.client import ModelServerClient
from genesig.local_endpoint import runtime_client, start_local_endpoint
from genesig.server_process import ServerProcess
from tests.tarballs import add_member

from .conftest import ServerFactory

GENES = ["LRIG1", "HPGD", "GDF15"]
CSV = b"LRIG1,HPGD,GDF15\n3.2,0,11.5\n"
MARKER = "genesig-pickle-ran"


class _Exploit:
    """Unpickling this creates a marker file: if the marker ever exists, a pickle was executed."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str, str]]:
        return (os.system, (f"touch {self.marker}",))


def _raw(prefix: Path, name: str, build: Callable[[tarfile.TarFile], None]) -> None:
    with tarfile.open(prefix / f"{name}-v1.tar.gz", "w:gz") as tar:
        build(tar)


def _tar_bomb(prefix: Path, name: str, size: int) -> None:
    """A member that claims, and really expands to, ``size`` zero bytes (~0.1% of that on disk)."""
    path = prefix / f"{name}-v1.tar.gz"
    info = tarfile.TarInfo("weights.safetensors")
    info.size = size
    header = info.tobuf(format=tarfile.GNU_FORMAT)
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip framing
    with open(path, "wb") as out:
        out.write(compressor.compress(header))
        chunk = b"\0" * (1 << 20)
        for _ in range(size // len(chunk)):
            out.write(compressor.compress(chunk))
        out.write(compressor.compress(b"\0" * 1024))  # end-of-archive blocks
        out.write(compressor.flush())


def _repack(prefix: Path, good: Path, name: str, mutate: Callable[[dict[str, bytes]], None]) -> None:
    """The good artifact's members, changed by ``mutate``, under a new name."""
    with tarfile.open(good) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    mutate(members)
    with tarfile.open(prefix / f"{name}-v1.tar.gz", "w:gz") as tar:
        for member, data in members.items():
            add_member(tar, member, data)


def _manifest(change: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, bytes]], None]:
    def mutate(members: dict[str, bytes]) -> None:
        doc = json.loads(members["genesig-model.json"])
        change(doc)
        members["genesig-model.json"] = json.dumps(doc).encode()

    return mutate


def _swap_weights(weights: bytes) -> Callable[[dict[str, bytes]], None]:
    """Other weights, with a manifest whose checksum matches them: only the shapes can tell."""

    def mutate(members: dict[str, bytes]) -> None:
        doc = json.loads(members["genesig-model.json"])
        doc["files"]["weights.safetensors"] = {"sha256": hashlib.sha256(weights).hexdigest(), "bytes": len(weights)}
        members["weights.safetensors"] = weights
        members["genesig-model.json"] = json.dumps(doc).encode()

    return mutate


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A prefix with one good model and one artifact per hostile case; returns it and case -> expected message."""
    prefix = tmp_path_factory.mktemp("prefix")
    good = write_synthetic_artifact(prefix, "good", GENES, seed=3)
    scratch = tmp_path_factory.mktemp("scratch")
    marker = str(scratch / MARKER)
    cases: dict[str, str] = {
        "absolute": "unsafe path",
        "dotdot": "unsafe path",
        "nested-dotdot": "unsafe path",
        "symlink": "is a link",
        "hardlink": "is a link",
        "device": "not a regular file",
        "fifo": "not a regular file",
        "tar-bomb": "more than",
        "not-a-tarball": "cannot read artifact",
        "unknown-schema": "schema",
        "wrong-checksum": "sha256",
        "shape-mismatch": "has shape [1, 4] but the manifest's 3 genes",
        "pickle-weights": "not a valid safetensors file",
        "missing-weights": "weights.safetensors",
        "missing-manifest": "genesig-model.json",
    }
    _raw(prefix, "absolute", lambda t: add_member(t, "/tmp/genesig-evil"))
    _raw(prefix, "dotdot", lambda t: add_member(t, "../evil"))
    _raw(prefix, "nested-dotdot", lambda t: add_member(t, "model/../../evil"))
    _raw(
        prefix,
        "symlink",
        lambda t: add_member(t, "weights.safetensors", b"", type=tarfile.SYMTYPE, linkname="/etc/passwd"),
    )
    _raw(
        prefix,
        "hardlink",
        lambda t: add_member(t, "weights.safetensors", b"", type=tarfile.LNKTYPE, linkname="/etc/passwd"),
    )
    _raw(prefix, "device", lambda t: add_member(t, "weights.safetensors", b"", type=tarfile.CHRTYPE))
    _raw(prefix, "fifo", lambda t: add_member(t, "weights.safetensors", b"", type=tarfile.FIFOTYPE))
    _tar_bomb(prefix, "tar-bomb", 300 * 1024 * 1024)
    (prefix / "not-a-tarball-v1.tar.gz").write_bytes(b"#!/bin/sh\necho this is not a model\n")
    _repack(prefix, good, "unknown-schema", _manifest(lambda d: d.update(schema_version="9.0")))
    _repack(
        prefix,
        good,
        "wrong-checksum",
        lambda m: m.update({"weights.safetensors": m["weights.safetensors"][:-1] + b"\1"}),
    )
    with tarfile.open(write_synthetic_artifact(scratch, "four", [*GENES, "EXTRA"], seed=1)) as tar:
        four_gene_weights = tar.extractfile("weights.safetensors").read()  # type: ignore[union-attr]
    _repack(prefix, good, "shape-mismatch", _swap_weights(four_gene_weights))
    # The manifest's checksum matches the pickle: only refusing to treat it as anything but safetensors stops it.
    _repack(prefix, good, "pickle-weights", _swap_weights(pickle.dumps(_Exploit(marker))))
    _repack(prefix, good, "missing-weights", lambda m: m.pop("weights.safetensors"))
    _repack(prefix, good, "missing-manifest", lambda m: m.pop("genesig-model.json"))
    return prefix, cases


@pytest.fixture(scope="module")
def endpoint(
    start_server: ServerFactory, hostile: tuple[Path, dict[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, ServerProcess, Path]]:
    server = start_server()
    work = tmp_path_factory.mktemp("endpoint")
    proc, url = start_local_endpoint(hostile[0], server.url, work)
    yield url, server, work
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


def invoke(client: Any, target: str) -> dict[str, Any]:
    response = client.invoke_endpoint(
        EndpointName="local", TargetModel=target, ContentType="text/csv", Accept="application/json", Body=CSV
    )
    return dict(response, Body=response["Body"].read())


CASE_NAMES = [
    "absolute",
    "dotdot",
    "nested-dotdot",
    "symlink",
    "hardlink",
    "device",
    "fifo",
    "tar-bomb",
    "not-a-tarball",
    "unknown-schema",
    "wrong-checksum",
    "shape-mismatch",
    "pickle-weights",
    "missing-weights",
    "missing-manifest",
]


@pytest.mark.parametrize("case", CASE_NAMES)
def test_hostile_artifact_is_refused_and_changes_nothing(
    endpoint: tuple[str, ServerProcess, Path], hostile: tuple[Path, dict[str, str]], case: str
) -> None:
    url, server, work = endpoint
    prefix, cases = hostile
    client = runtime_client(url)
    with pytest.raises(client.exceptions.ValidationError) as info:
        invoke(client, f"{case}-v1.tar.gz")
    message = info.value.response["Error"]["Message"]
    assert f"{case}-v1.tar.gz is not a valid model artifact" in message, message
    assert cases[case].lower() in message.lower(), message
    assert "Traceback" not in message
    # Nothing outside the cache, nothing executed, nothing registered, and the good model answers.
    for outside in (work / "evil", work.parent / "evil", Path("/tmp/genesig-evil"), prefix.parent / "evil"):
        assert not outside.exists(), outside
    assert not list(prefix.parent.rglob(MARKER)), "the pickle was executed"
    cache = next(work.glob("cache-*"))
    assert all((d / "model").is_dir() for d in cache.iterdir() if d.is_dir()), "no half-extracted folder left"
    assert invoke(client, "good-v1.tar.gz")["ResponseMetadata"]["HTTPStatusCode"] == 200
    with ModelServerClient(server.url) as direct:
        assert len(direct.list().json()["models"]) == 1, "only the good model is loaded"


def _link_outside(model_dir: Path, fname: str) -> None:
    outside = model_dir.parent / f"outside-{fname}"
    (model_dir / fname).rename(outside)
    (model_dir / fname).symlink_to(outside)


def _edit_manifest(model_dir: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    path = model_dir / "genesig-model.json"
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def _fifo_weights(model_dir: Path) -> None:
    (model_dir / "weights.safetensors").unlink()
    os.mkfifo(model_dir / "weights.safetensors")  # opening it would block the load forever


FOLDER_CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "linked-manifest": (lambda d: _link_outside(d, "genesig-model.json"), "genesig-model.json is a link"),
    "linked-weights": (lambda d: _link_outside(d, "weights.safetensors"), "weights.safetensors is a link"),
    "weights-to-device": (
        lambda d: ((d / "weights.safetensors").unlink(), (d / "weights.safetensors").symlink_to("/dev/zero")),
        "weights.safetensors is a link",
    ),
    "fifo-weights": (_fifo_weights, "lacks weights.safetensors"),
    "oversized-manifest": (
        lambda d: os.truncate(d / "genesig-model.json", 16 * 1024 * 1024 + 1),
        "genesig-model.json is 16777217 bytes",
    ),
    "declared-over-limit": (
        lambda d: _edit_manifest(d, lambda m: m["files"]["weights.safetensors"].update(bytes=1 << 40)),
        "files total 1099511627776 bytes",
    ),
    "escaping-file-name": (
        lambda d: _edit_manifest(d, lambda m: m["files"].update({"../evil": m["files"]["weights.safetensors"]})),
        "invalid file name '../evil'",
    ),
}


@pytest.fixture(scope="module")
def container(start_server: ServerFactory, model_dirs: Callable[..., Path]) -> Iterator[tuple[ServerProcess, str]]:
    """A real server with one good model loaded through the container API."""
    server = start_server()
    good = model_dirs("folder-good", seed=7)
    name = hashlib.sha256(str(good).encode()).hexdigest()[:24]
    with ModelServerClient(server.url) as client:
        assert client.load(name, str(good)).status == 200
    yield server, name


@pytest.mark.parametrize("case", list(FOLDER_CASES))
def test_hostile_model_folder_is_refused_by_the_container(
    container: tuple[ServerProcess, str], model_dirs: Callable[..., Path], case: str
) -> None:
    # On SageMaker the platform extracts the tarball into /opt/ml/models/<hash>/model and hands the container
    # the folder: whatever a tarball can hold may be there, unchecked by our extraction.
    server, good = container
    model_dir = model_dirs(f"folder-{case}", seed=8)
    damage, reason = FOLDER_CASES[case]
    damage(model_dir)
    with ModelServerClient(server.url, timeout=30) as client:
        response = client.load(f"hostile-{case}", str(model_dir))
        assert response.status == 422 and response.json()["error"] == "invalid_artifact", response.body
        assert reason in response.json()["message"], response.json()
        assert [m["modelName"] for m in client.list().json()["models"]] == [good], "nothing else registered"
        assert client.invoke(good, b'{"inputs": [[1.5, 0, 3]]}').status == 200
