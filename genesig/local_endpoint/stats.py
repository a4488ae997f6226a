"""What a local endpoint counts: SageMaker's MME metrics (loaded models, cache hits and misses, load time) and, per
TargetModel, invocations, loads, evictions and median times (``GET /metrics``, and the log at close)."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("genesig.local_endpoint")
# Timings kept per model for the medians: the most recent ones, so a long-running endpoint stays bounded.
TIMING_WINDOW = 1024
LOG_MODELS_AT_CLOSE = 20


@dataclass
class ModelStats:
    invocations: int = 0
    loads: int = 0
    evictions: int = 0
    load_ms: deque[float] = field(default_factory=lambda: deque(maxlen=TIMING_WINDOW))
    invoke_ms: deque[float] = field(default_factory=lambda: deque(maxlen=TIMING_WINDOW))


def _median(values: Collection[float]) -> float | None:
    return sorted(values)[len(values) // 2] if values else None


@dataclass
class EndpointStats:
    cache_hits: int = 0
    cache_misses: int = 0
    models: dict[str, ModelStats] = field(default_factory=dict)

    def of(self, target: str) -> ModelStats:
        return self.models.setdefault(target, ModelStats())

    def snapshot(self, loaded: Collection[str], disk_bytes: int) -> dict[str, Any]:
        """``GET /metrics``: SageMaker's names for the endpoint's figures, then each model's."""
        load_times = [ms for s in self.models.values() for ms in s.load_ms]
        return {
            "LoadedModelCount": len(loaded),
            "ModelCacheHit": self.cache_hits,
            "ModelCacheMiss": self.cache_misses,
            "ModelLoadingTimeMedianMs": _median(load_times),
            "CacheDiskBytes": disk_bytes,
            "ModelLoads": sum(s.loads for s in self.models.values()),
            "ModelEvictions": sum(s.evictions for s in self.models.values()),
            "models": {
                t: {
                    "invocations": s.invocations,
                    "loads": s.loads,
                    "evictions": s.evictions,
                    "load_ms_median": _median(s.load_ms),
                    "invoke_ms_median": _median(s.invoke_ms),
                    "loaded": t in loaded,
                }
                for t, s in self.models.items()
            },
        }

    def log_totals(self, loaded: Collection[str], disk_bytes: int) -> None:
        """The endpoint's totals and its busiest models, into the log (at close)."""
        summary = self.snapshot(loaded, disk_bytes)
        logger.info(
            "endpoint totals: loaded=%d cache_hits=%d cache_misses=%d loads=%d evictions=%d",
            summary["LoadedModelCount"], summary["ModelCacheHit"], summary["ModelCacheMiss"], summary["ModelLoads"],
            summary["ModelEvictions"],
        )  # fmt: skip
        busiest = sorted(summary["models"].items(), key=lambda item: -item[1]["invocations"])
        for target, stats in busiest[:LOG_MODELS_AT_CLOSE]:
            logger.info(
                "model %s: invocations=%d loads=%d evictions=%d load_ms_median=%s invoke_ms_median=%s",
                target, stats["invocations"], stats["loads"], stats["evictions"], stats["load_ms_median"],
                stats["invoke_ms_median"],
            )  # fmt: skip
        if len(busiest) > LOG_MODELS_AT_CLOSE:
            logger.info(
                "... and %d less used models (all at GET /metrics while running)", len(busiest) - LOG_MODELS_AT_CLOSE
            )
