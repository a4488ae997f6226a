"""Serving benchmark: cold load, memory per loaded model, warm latency and throughput, side by side.

Configurations, all in one run on the same machine and the same artifacts:
  stock    - a backend that imports torch and runs the model in torch (the AWS sample's approach), MMS direct
  genesig  - our numpy backend behind our gateway (what the image serves)
  direct   - our numpy backend, MMS direct (isolates what the gateway costs)

Usage: python bench/serving.py [--models 12] [--warm 2000] [--seconds 10] [--out bench/results/serving.json]
Not a test: shared machines are noisy, so read ratios within one run, not absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from genesig.artifact import extract_artifact
from genesig.artifact.synthetic import write_synthetic_artifact
from genesig.client import ModelServerClient
from genesig.container.memory import pss_bytes
from genesig.logs import configure_logging
from genesig.server_process import ServerProcess

logger = logging.getLogger("bench.serving")
BENCH_DIR = Path(__file__).resolve().parent
GENES = [f"GENE{i}" for i in range(21)]
BODY = json.dumps({"inputs": [[float(i % 7) for i in range(len(GENES))]]}).encode()


@dataclass
class Config:
    name: str
    handler: str
    direct: bool


CONFIGS = [
    Config("stock", "baselines.torch_handler:handle", direct=True),
    Config("genesig", "genesig.container.handler:handle", direct=False),
    Config("direct", "genesig.container.handler:handle", direct=True),
]


@dataclass
class Result:
    config: str
    models: int
    load_s: list[float] = field(default_factory=list)
    reload_s: list[float] = field(default_factory=list)
    memory_per_model_mb: float = 0.0
    warm_ms: list[float] = field(default_factory=list)
    throughput_rps: float = 0.0
    throughput_errors: int = 0

    def summary(self) -> dict[str, float]:
        def pct(values: list[float], q: float) -> float:
            return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]

        return {
            "cold_load_p50_s": statistics.median(self.load_s),
            "reload_p50_s": statistics.median(self.reload_s),
            "memory_per_model_mb": self.memory_per_model_mb,
            "warm_p50_ms": statistics.median(self.warm_ms),
            "warm_p99_ms": pct(self.warm_ms, 99),
            "throughput_8_clients_rps": self.throughput_rps,
            "throughput_errors": self.throughput_errors,
        }


def tree_pss(server: ServerProcess) -> int:
    assert server.process is not None
    pids = [server.process.pid] + [p.pid for p in server.descendants()]
    return sum(pss_bytes(pid) for pid in pids)


def free_low_port() -> int:
    from genesig.container.server import pick_internal_port

    return pick_internal_port(None)


def run_config(config: Config, model_dirs: list[Path], args: argparse.Namespace, work: Path) -> Result:
    mms_port = free_low_port()
    env = {
        "GENESIG_HANDLER": config.handler,
        "GENESIG_MODEL_SERVER_PORT": str(mms_port),
        "PYTHONPATH": os.pathsep.join([str(BENCH_DIR), os.environ.get("PYTHONPATH", "")]),
    }
    result = Result(config=config.name, models=len(model_dirs))
    with ServerProcess(work / f"state-{config.name}", env=env) as server:
        url = f"http://127.0.0.1:{mms_port}" if config.direct else server.url
        client = ModelServerClient(url)
        time.sleep(1.0)
        before = tree_pss(server)
        names = [f"m{i:04d}" for i in range(len(model_dirs))]
        for name, model_dir in zip(names, model_dirs, strict=True):
            started = time.perf_counter()
            response = client.load(name, str(model_dir))
            result.load_s.append(time.perf_counter() - started)
            if response.status != 200:
                raise RuntimeError(f"{config.name}: load {name} -> {response.status} {response.body[:200]!r}")
        time.sleep(1.0)
        result.memory_per_model_mb = (tree_pss(server) - before) / len(model_dirs) / 1e6

        # A fresh JVM needs a few thousand requests before its JIT settles.
        for _ in range(args.warmup):
            client.invoke(names[0], BODY)
        for _ in range(args.warm):
            started = time.perf_counter()
            response = client.invoke(names[0], BODY)
            result.warm_ms.append((time.perf_counter() - started) * 1000)
            assert response.status == 200, response.body

        counts = [0] * 8
        errors = [0] * 8
        deadline = time.monotonic() + args.seconds

        def worker(i: int) -> None:
            with ModelServerClient(url) as own:
                target = names[i % len(names)]
                while time.monotonic() < deadline:
                    if own.invoke(target, BODY).status == 200:
                        counts[i] += 1
                    else:
                        errors[i] += 1

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        result.throughput_rps = sum(counts) / args.seconds
        result.throughput_errors = sum(errors)

        # Evict and reload: SageMaker unloads LRU models and loads them again later.
        for name, model_dir in list(zip(names, model_dirs, strict=True))[: min(5, len(names))]:
            client.unload(name)
            started = time.perf_counter()
            response = client.load(name, str(model_dir))
            result.reload_s.append(time.perf_counter() - started)
            assert response.status == 200, response.body
        client.close()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=12)
    parser.add_argument("--warm", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--configs", default="stock,genesig,direct")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "serving.json")
    args = parser.parse_args()
    configure_logging("INFO")
    with tempfile.TemporaryDirectory(prefix="genesig-bench-") as tmp:
        work = Path(tmp)
        model_dirs = []
        for i in range(args.models):
            archive = write_synthetic_artifact(work / "prefix", f"sig{i:04d}", GENES, seed=i)
            model_dirs.append(extract_artifact(archive, work / "models" / f"sig{i:04d}" / "model"))
        results = []
        for config in CONFIGS:
            if config.name in args.configs.split(","):
                logger.info("running %s", config.name)
                results.append(run_config(config, model_dirs, args, work))
    summaries = {r.config: r.summary() for r in results}
    report = {
        "machine": {"cpus": psutil.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 1e9, 1)},
        "parameters": {"models": args.models, "warm_requests": args.warm, "throughput_seconds": args.seconds},
        "results": summaries,
        "raw": [asdict(r) for r in results],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    header = f"| measure | {' | '.join(summaries)} |"
    lines = [header, "|---" * (len(summaries) + 1) + "|"]
    for key in next(iter(summaries.values())):
        lines.append(f"| {key} | " + " | ".join(f"{s[key]:.3f}" for s in summaries.values()) + " |")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
