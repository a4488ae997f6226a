"""How much memory the container really has left: cgroup v2, cgroup v1, or the host, whichever is tighter."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
# cgroup v1 reports "no limit" as a huge page-aligned number.
_UNLIMITED = 1 << 60


@dataclass(frozen=True)
class MemoryStatus:
    limit_bytes: int
    used_bytes: int
    source: str

    @property
    def available_bytes(self) -> int:
        return max(0, self.limit_bytes - self.used_bytes)


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _stat_value(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _meminfo(root: Path = Path("/proc")) -> dict[str, int]:
    values: dict[str, int] = {}
    for line in (root / "meminfo").read_text().splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            values[name] = int(parts[0]) * 1024
    return values


def host_memory(proc_root: Path = Path("/proc")) -> MemoryStatus:
    info = _meminfo(proc_root)
    total = info["MemTotal"]
    return MemoryStatus(limit_bytes=total, used_bytes=total - info.get("MemAvailable", 0), source="host")


def cgroup_memory(root: Path = CGROUP_ROOT) -> MemoryStatus | None:
    """The container's cgroup limit and usage, not counting reclaimable page cache; None if unlimited."""
    v2_limit = _read_int(root / "memory.max")
    if v2_limit is not None and (current := _read_int(root / "memory.current")) is not None:
        used = current - _stat_value(root / "memory.stat", "inactive_file")
        return MemoryStatus(limit_bytes=v2_limit, used_bytes=max(0, used), source="cgroup v2")
    v1 = root / "memory"
    v1_limit = _read_int(v1 / "memory.limit_in_bytes")
    if v1_limit is not None and v1_limit < _UNLIMITED and (usage := _read_int(v1 / "memory.usage_in_bytes")):
        used = usage - _stat_value(v1 / "memory.stat", "total_inactive_file")
        return MemoryStatus(limit_bytes=v1_limit, used_bytes=max(0, used), source="cgroup v1")
    return None


def container_memory(cgroup_root: Path = CGROUP_ROOT, proc_root: Path = Path("/proc")) -> MemoryStatus:
    """The tighter of the cgroup limit (when one is set) and the host's available memory."""
    host = host_memory(proc_root)
    group = cgroup_memory(cgroup_root)
    if group is None or group.available_bytes > host.available_bytes:
        return host
    return group


def pss_bytes(pid: int, proc_root: Path = Path("/proc")) -> int:
    """Proportional set size of one process (shared pages split between sharers); 0 if it is gone."""
    try:
        for line in (proc_root / str(pid) / "smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def budget_memory(limit_bytes: int, pids: list[int]) -> MemoryStatus:
    """An explicit memory budget for the server, charged with the PSS of the given processes."""
    return MemoryStatus(limit_bytes=limit_bytes, used_bytes=sum(pss_bytes(p) for p in pids), source="budget")
