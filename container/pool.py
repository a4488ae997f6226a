"""The worker pool's shared state: what the gateway (one writer) and the pool's workers (readers) agree on, on disk.

Multi Model Server knows one model, the pool (``POOL_MODEL``), served by a fixed number of workers that can each
answer for any loaded signature. Which signatures are loaded lives here, in the server's state folder:

- ``models/<name>``: one entry per loaded signature (its verified folder, manifest name and version, cost and a
  number unique to this load). Workers open a signature from its entry the first time they are asked for it.
- ``accept/<name>``: an empty flag while the signature takes new invocations. nginx forwards an invocation only if
  the flag exists (one ``stat`` per request); an unload removes it first, then fences, then removes the entry.
- ``generation``: a counter the gateway bumps whenever entries are removed. A worker that sees it change drops the
  signatures whose entries are gone.
- ``release``: the last fence the gateway has released (below).
- ``workers/<pid>``: each worker's slot, written only by that worker: the last fence it has reached, the generation
  it has caught up with, and the memory of what it has opened.

A **fence** is how an unload waits for the requests a signature already accepted, in every worker: the gateway sends
one marker request per worker to the pool, behind everything already queued (Multi Model Server's queue is one FIFO
shared by the workers). A worker that takes marker *k* has answered everything it took before; it writes *k* into its
slot and waits there until the gateway releases *k*. Once every live worker's slot shows *k*, nothing accepted before
the markers is still unanswered: the gateway removes the entries, bumps the generation and releases; each worker drops
what was removed, writes the generation into its slot and answers its marker.

Files rather than a socket protocol: nginx can test a file without a module, a worker reads them without talking
to the gateway, and a worker that dies leaves nothing behind that the next one depends on.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import msgspec

from genesig.errors import BadRequest

# The one model Multi Model Server knows: every signature is answered by its workers.
POOL_MODEL = "genesig-pool"
# The header that names the signature of an invocation sent to the pool (nginx and the gateway set it; percent-
# encoded, as it comes from the request path).
MODEL_HEADER = "X-Genesig-Model"
# A file name: at most 255 bytes, no '/', NUL, '.' or '..'.
MAX_NAME_BYTES = 255

_COUNTER = struct.Struct("<Q")
# fence reached, generation caught up with, bytes opened, signatures opened
_SLOT = struct.Struct("<QQQQ")


class Entry(msgspec.Struct, frozen=True):
    """A loaded signature, as the workers read it."""

    load_id: int
    name: str
    url: str
    model: str
    version: int
    cost_bytes: int


_entry_decoder = msgspec.json.Decoder(Entry)


def check_name(name: str) -> str:
    """Model names become file names here (and nginx tests them): refuse what cannot be one."""
    if not name or "/" in name or "\0" in name or name in (".", ".."):
        raise BadRequest("model_name must be a non-empty name without '/' or NUL, and not '.' or '..'")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise BadRequest(f"model_name is {len(name.encode())} bytes; at most {MAX_NAME_BYTES} are accepted")
    return name


@dataclass(frozen=True)
class PoolPaths:
    root: Path

    @classmethod
    def under(cls, state_dir: str | Path) -> PoolPaths:
        """The pool's folder in a server's state folder."""
        return cls(Path(state_dir).resolve() / "pool")

    @property
    def entries(self) -> Path:
        return self.root / "models"

    @property
    def accept(self) -> Path:
        return self.root / "accept"

    @property
    def workers(self) -> Path:
        return self.root / "workers"

    @property
    def generation(self) -> Path:
        return self.root / "generation"

    @property
    def release(self) -> Path:
        return self.root / "release"

    @property
    def scratch(self) -> Path:
        return self.root / "tmp"

    @property
    def model_dir(self) -> Path:
        """The folder Multi Model Server registers as the pool model (it holds nothing: the handler is the model)."""
        return self.root / "pool-model"


# --- the gateway's side (the only writer) ---------------------------------------------------------------------
class PoolRegistry:
    """Writes entries, accept flags and the generation. Starts empty: a restarted server has nothing loaded, as
    SageMaker expects of a new container."""

    def __init__(self, paths: PoolPaths) -> None:
        self.paths = paths
        for folder in (paths.entries, paths.accept, paths.workers, paths.scratch):
            if folder.exists():
                for child in folder.iterdir():
                    child.unlink()
            folder.mkdir(parents=True, exist_ok=True)
        paths.model_dir.mkdir(parents=True, exist_ok=True)
        self._generation = _counter(paths.generation, writable=True)
        self._release = _counter(paths.release, writable=True)
        self._next_load_id = 1
        self._next_fence = 1

    def close(self) -> None:
        self._generation.close()
        self._release.close()

    def new_load_id(self) -> int:
        load_id, self._next_load_id = self._next_load_id, self._next_load_id + 1
        return load_id

    def write_entry(self, entry: Entry) -> None:
        """Atomically: a worker reads either no entry or the whole of it."""
        fd, tmp = tempfile.mkstemp(dir=self.paths.scratch)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(msgspec.json.encode(entry))
            os.replace(tmp, self.paths.entries / entry.name)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def remove_entries(self, names: list[str]) -> int:
        """Remove the entries and bump the generation; returns the generation the workers must catch up with."""
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                (self.paths.entries / name).unlink()
        generation = self.generation + 1
        _COUNTER.pack_into(self._generation, 0, generation)
        return generation

    @property
    def generation(self) -> int:
        return int(_COUNTER.unpack_from(self._generation, 0)[0])

    def new_fence(self) -> int:
        fence, self._next_fence = self._next_fence, self._next_fence + 1
        return fence

    def release_fence(self, fence: int) -> None:
        _COUNTER.pack_into(self._release, 0, fence)

    def accept(self, name: str) -> None:
        (self.paths.accept / name).touch()

    def refuse(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.paths.accept / name).unlink()

    def slots(self) -> list[WorkerState]:
        return live_slots(self.paths)


def live_slots(paths: PoolPaths) -> list[WorkerState]:
    """The slots of the pool's live workers; a dead worker's slot is removed."""
    states = []
    for path in paths.workers.iterdir():
        try:
            pid = int(path.name.split("-", 1)[0])
            data = path.read_bytes()
        except (ValueError, OSError):
            continue
        if not _alive(pid):
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        if len(data) >= _SLOT.size:
            states.append(WorkerState(pid, *_SLOT.unpack_from(data, 0)))
    return states


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) is not a worker any more.
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


@dataclass(frozen=True)
class WorkerState:
    pid: int
    fence: int
    generation: int
    opened_bytes: int
    opened: int


def _counter(path: Path, *, writable: bool) -> mmap.mmap:
    """An 8-byte counter shared through a memory-mapped file (created at 0 by the writer)."""
    if writable:
        path.write_bytes(_COUNTER.pack(0))
    fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
    try:
        return mmap.mmap(fd, _COUNTER.size, prot=mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0))
    finally:
        os.close(fd)


# --- a worker's side -------------------------------------------------------------------------------------------
class PoolView:
    """What one worker reads (entries, the generation) and writes (its own slot)."""

    def __init__(self, paths: PoolPaths) -> None:
        self.paths = paths
        self._generation = _counter(paths.generation, writable=False)
        self._release = _counter(paths.release, writable=False)
        self._slot: mmap.mmap | None = None
        self._slot_pid = 0

    @property
    def generation(self) -> int:
        return int(_COUNTER.unpack_from(self._generation, 0)[0])

    @property
    def released(self) -> int:
        return int(_COUNTER.unpack_from(self._release, 0)[0])

    def entry(self, name: str) -> Entry | None:
        try:
            data = (self.paths.entries / name).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except OSError as exc:
            if exc.errno == 36:  # ENAMETOOLONG: never loaded, since loads refuse such names
                return None
            raise
        return _entry_decoder.decode(data)

    def has_entry(self, name: str, load_id: int) -> bool:
        entry = self.entry(name)
        return entry is not None and entry.load_id == load_id

    def open_slot(self, name: str | None = None) -> None:
        """This worker's slot, named by its pid (after a fork the child opens its own); ``name`` ("<pid>-<n>")
        tells apart workers that share a process, as in the tests."""
        path = self.paths.workers / (name or str(os.getpid()))
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.ftruncate(fd, _SLOT.size)
            self._slot = mmap.mmap(fd, _SLOT.size)
        finally:
            os.close(fd)
        self._slot_pid = os.getpid()

    @property
    def has_slot(self) -> bool:
        return self._slot is not None and self._slot_pid == os.getpid()

    def write_slot(self, fence: int, generation: int, opened_bytes: int, opened: int) -> None:
        if self._slot is not None:
            _SLOT.pack_into(self._slot, 0, fence, generation, opened_bytes, opened)

    @property
    def fence(self) -> int:
        return int(_SLOT.unpack_from(self._slot, 0)[0]) if self._slot is not None else 0
