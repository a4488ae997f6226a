"""Free-memory detection from cgroup v2, cgroup v1 and /proc/meminfo, on fake file trees."""

from __future__ import annotations

import os
from pathlib import Path

from genesig.container.memory import budget_memory, cgroup_memory, container_memory, host_memory, pss_bytes

MIB = 1024 * 1024


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def proc(tmp: Path, total_mib: int, available_mib: int) -> Path:
    return write(
        tmp / "proc", {"meminfo": f"MemTotal: {total_mib * 1024} kB\nMemAvailable: {available_mib * 1024} kB\n"}
    )


def test_cgroup_v2_counts_usage_minus_inactive_page_cache(tmp_path: Path) -> None:
    root = write(
        tmp_path / "cg",
        {
            "memory.max": str(1024 * MIB),
            "memory.current": str(700 * MIB),
            "memory.stat": f"anon 1\ninactive_file {200 * MIB}\n",
        },
    )
    status = cgroup_memory(root)
    assert status is not None and status.source == "cgroup v2"
    assert status.available_bytes == 524 * MIB


def test_cgroup_v2_without_limit_falls_back_to_host(tmp_path: Path) -> None:
    root = write(tmp_path / "cg", {"memory.max": "max", "memory.current": "1"})
    status = container_memory(root, proc(tmp_path, 4096, 3000))
    assert (status.source, status.available_bytes) == ("host", 3000 * MIB)


def test_cgroup_v1(tmp_path: Path) -> None:
    root = write(
        tmp_path / "cg",
        {
            "memory/memory.limit_in_bytes": str(2048 * MIB),
            "memory/memory.usage_in_bytes": str(1048 * MIB),
            "memory/memory.stat": f"total_inactive_file {48 * MIB}\n",
        },
    )
    status = container_memory(root, proc(tmp_path, 8192, 8000))
    assert (status.source, status.available_bytes) == ("cgroup v1", 1048 * MIB)


def test_cgroup_v1_unlimited_is_ignored(tmp_path: Path) -> None:
    root = write(
        tmp_path / "cg", {"memory/memory.limit_in_bytes": "9223372036854771712", "memory/memory.usage_in_bytes": "5"}
    )
    assert cgroup_memory(root) is None


def test_tighter_host_wins_over_a_loose_cgroup(tmp_path: Path) -> None:
    root = write(tmp_path / "cg", {"memory.max": str(16384 * MIB), "memory.current": "0"})
    assert container_memory(root, proc(tmp_path, 4096, 1000)).available_bytes == 1000 * MIB


def test_host_memory_reads_this_machine() -> None:
    status = host_memory()
    assert 0 < status.available_bytes <= status.limit_bytes


def test_budget_is_charged_with_real_pss() -> None:
    own = pss_bytes(os.getpid())
    assert own > 1 * MIB
    status = budget_memory(own * 4, [os.getpid()])
    assert status.used_bytes >= own // 2 and status.source == "budget"
    assert pss_bytes(2**22 + 12345) == 0
