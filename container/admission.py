"""Memory admission: a signature is loaded only if what it can cost fits, else 507 (SageMaker then unloads its least
recently used model and retries).

What a signature costs is computed here from its manifest, not read from it: each pool worker that answers for it
opens it once (parsed manifest, model, small weights: private to the worker), and weights large enough to be
memory-mapped are one shared copy. A signature is charged for every worker (any of them may be asked for it)::

    cost = workers x private + shared

The pool's fixed cost (Multi Model Server's JVM, the workers' interpreters, the gateway, nginx) is measured, not
estimated: it is the memory in use now less what the workers report having opened. Admission keeps::

    fixed + sum of loaded signatures' costs + this one's  <=  limit - reserve

Charging each loaded signature its full cost whether or not every worker has opened it yet keeps the promise that
the server will not run out of memory however traffic spreads over the loaded signatures.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from genesig.artifact import Manifest
from genesig.artifact.package import opened_memory
from genesig.container.memory import MemoryStatus
from genesig.container.pool import PoolRegistry
from genesig.container.settings import MIB
from genesig.errors import InsufficientMemory

logger = logging.getLogger(__name__)
# Loads come in bursts (a new endpoint, a deploy): measuring the server's memory once per burst is enough, since the
# ledger accounts for every signature admitted since.
PROBE_MAX_AGE_S = 0.25

MemoryProbe = Callable[[], MemoryStatus]


def signature_cost(manifest: Manifest, workers: int, *, mapped: bool) -> int:
    private, shared = opened_memory(manifest, mapped=mapped)
    return workers * private + shared


class Admission:
    def __init__(self, probe: MemoryProbe, registry: PoolRegistry, workers: int, reserve_bytes: int) -> None:
        self.probe = probe
        self.registry = registry
        self.workers = workers
        self.reserve_bytes = reserve_bytes
        self.costs: dict[str, int] = {}
        self.committed = 0
        self._measured: tuple[float, MemoryStatus, int] | None = None

    def _memory(self) -> tuple[MemoryStatus, int]:
        """The memory status and the pool's fixed cost, measured together: the fixed cost is the memory in use less
        what the workers report having opened at that moment. Kept for ``PROBE_MAX_AGE_S``: unloads in between free
        only signatures' memory (released from ``committed``), never the fixed cost, so the pair stays right."""
        now = time.monotonic()
        if self._measured is None or now - self._measured[0] > PROBE_MAX_AGE_S:
            memory = self.probe()
            opened = sum(slot.opened_bytes for slot in self.registry.slots())
            self._measured = (now, memory, max(0, memory.used_bytes - opened))
        return self._measured[1], self._measured[2]

    def fixed_bytes(self) -> int:
        """Memory in use that no loaded signature accounts for (the JVM, interpreters, gateway, nginx)."""
        return self._memory()[1]

    def admit(self, name: str, manifest: Manifest, *, mapped: bool) -> int:
        """Reserve the signature's cost (raises ``InsufficientMemory`` when it does not fit); returns the cost.
        ``mapped``: the workers will memory-map its weights (one shared copy)."""
        need = signature_cost(manifest, self.workers, mapped=mapped)
        memory, fixed = self._memory()
        free = memory.limit_bytes - self.reserve_bytes - fixed - self.committed
        if need > free:
            logger.info(
                "refused %s: needs %d KiB, %d KiB free above the %d MiB reserve (%s, %d signatures loaded)",
                manifest.name,
                need // 1024,
                max(free, 0) // 1024,
                self.reserve_bytes // MIB,
                memory.source,
                len(self.costs),
            )
            raise InsufficientMemory(
                f"loading {manifest.name} needs about {_size(need)}; {_size(max(free, 0))} are free above the "
                f"{self.reserve_bytes // MIB} MiB reserve with {len(self.costs)} signatures loaded. Unload models and "
                "retry.",
                detail={"needed_bytes": need, "free_bytes": max(free, 0), "source": memory.source},
            )
        self.costs[name] = need
        self.committed += need
        return need

    def release(self, name: str) -> None:
        self.committed -= self.costs.pop(name, 0)


def _size(nbytes: int) -> str:
    return f"{nbytes / MIB:.1f} MiB" if nbytes >= MIB else f"{nbytes // 1024} KiB"
