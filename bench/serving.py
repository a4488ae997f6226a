"""Serving benchmark: cold load, memory per loaded model, warm latency and throughput, side by side.

Configurations, all running at the same time on the same machine with the same artifacts:
  stock    - a backend that imports torch and runs the model in torch (the AWS sample's approach), MMS direct
  genesig  - what the image serves: nginx in front, our numpy backend
  direct   - our numpy backend, MMS direct (shows what nginx costs)

Latency and throughput are measured in interleaved rounds (stock, genesig, direct, stock, ...) so that
the machine's noise hits every configuration alike; the report gives medians over all requests.
Throughput uses wrk (C, one thread, 8 connections over 8 models) when installed, else Python threads.

Usage: python bench/serving.py [--models 12] [--rounds 5] [--warm 1000] [--seconds 5]
Not a test: read ratios within one run, not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import statistics
import subprocess
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
from genesig.container.server import pick_internal_port
from genesig.logs import configure_logging
from genesig.server_process import ServerProcess

logger = logging.getLogger("bench.serving")
BENCH_DIR = Path(__file__).resolve().parent
GENES = [f"GENE{i}" for i in range(21)]
BODY = json.dumps({"inputs": [[float(i % 7) for i in range(len(GENES))]]}).encode()
GIB16_MB = 16 * 1024 * 1.048576


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
    throughput_rps: list[float] = field(default_factory=list)
    errors: int = 0

    def summary(self) -> dict[str, float]:
        warm = sorted(self.warm_ms)
        return {
            "cold_load_p50_s": statistics.median(self.load_s),
            "reload_after_unload_p50_s": statistics.median(self.reload_s),
            "memory_per_model_mb": self.memory_per_model_mb,
            "models_per_16_gib_derived": GIB16_MB // self.memory_per_model_mb,
            "warm_p50_ms": statistics.median(warm),
            "warm_p99_ms": warm[int(0.99 * (len(warm) - 1))],
            "throughput_8_clients_rps": statistics.median(self.throughput_rps),
            "errors": self.errors,
        }


@dataclass
class Running:
    config: Config
    server: ServerProcess
    url: str
    names: list[str]
    result: Result


def tree_pss(server: ServerProcess) -> int:
    assert server.process is not None
    return sum(pss_bytes(pid) for pid in [server.process.pid] + [p.pid for p in server.descendants()])


def start(config: Config, model_dirs: list[Path], work: Path) -> Running:
    mms_port = pick_internal_port(None)
    env = {
        "GENESIG_HANDLER": config.handler,
        "GENESIG_MODEL_SERVER_PORT": str(mms_port),
        "PYTHONPATH": os.pathsep.join([str(BENCH_DIR), os.environ.get("PYTHONPATH", "")]),
    }
    server = ServerProcess(work / f"state-{config.name}", env=env).start()
    url = f"http://127.0.0.1:{mms_port}" if config.direct else server.url
    result = Result(config=config.name, models=len(model_dirs))
    names = [f"m{i:04d}" for i in range(len(model_dirs))]
    with ModelServerClient(url) as client:
        time.sleep(1.0)
        before = tree_pss(server)
        for name, model_dir in zip(names, model_dirs, strict=True):
            started = time.perf_counter()
            response = client.load(name, str(model_dir))
            result.load_s.append(time.perf_counter() - started)
            if response.status != 200:
                raise RuntimeError(f"{config.name}: load {name} -> {response.status} {response.body[:200]!r}")
        time.sleep(1.0)
        result.memory_per_model_mb = (tree_pss(server) - before) / len(model_dirs) / 1e6
    return Running(config, server, url, names, result)


def warm_round(run: Running, requests: int) -> None:
    with ModelServerClient(run.url) as client:
        for _ in range(requests):
            started = time.perf_counter()
            response = client.invoke(run.names[0], BODY)
            run.result.warm_ms.append((time.perf_counter() - started) * 1000)
            run.result.errors += response.status != 200


WRK_SCRIPT = """
local n = 0
local names = {%s}
wrk.method = "POST"
wrk.body = [==[%s]==]
wrk.headers["Content-Type"] = "application/json"
request = function()
  n = n + 1
  return wrk.format(nil, "/models/" .. names[(n %% #names) + 1] .. "/invoke")
end
"""


def throughput_round(run: Running, seconds: float, work: Path) -> None:
    names = run.names[:8]
    wrk = shutil.which("wrk")
    if wrk:
        script = work / "post.lua"
        script.write_text(WRK_SCRIPT % (", ".join(f'"{n}"' for n in names), BODY.decode()))
        out = subprocess.run(
            [wrk, "-t1", "-c8", f"-d{seconds:.0f}s", "-s", str(script), run.url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        run.result.throughput_rps.append(float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)))  # type: ignore[union-attr]
        bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        run.result.errors += int(bad.group(1)) if bad else 0
        return
    counts = [0] * 8
    deadline = time.monotonic() + seconds

    def worker(i: int) -> None:
        with ModelServerClient(run.url) as own:
            while time.monotonic() < deadline:
                ok = own.invoke(names[i % len(names)], BODY).status == 200
                counts[i] += ok
                run.result.errors += not ok

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    run.result.throughput_rps.append(sum(counts) / seconds)


def reload_round(run: Running, model_dirs: list[Path]) -> None:
    """SageMaker unloads LRU models and loads them again later: that load must be as fast as the first."""
    with ModelServerClient(run.url) as client:
        for name, model_dir in list(zip(run.names, model_dirs, strict=True))[-3:]:
            client.unload(name)
            started = time.perf_counter()
            response = client.load(name, str(model_dir))
            run.result.reload_s.append(time.perf_counter() - started)
            run.result.errors += response.status != 200


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warm", type=int, default=1000, help="requests per configuration per round")
    parser.add_argument("--warmup", type=int, default=3000, help="requests before measuring (JVM JIT)")
    parser.add_argument("--seconds", type=float, default=5.0, help="throughput seconds per round")
    parser.add_argument("--configs", default="stock,genesig,direct")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "serving.json")
    args = parser.parse_args()
    configure_logging("INFO")
    wanted = args.configs.split(",")
    with tempfile.TemporaryDirectory(prefix="genesig-bench-") as tmp:
        work = Path(tmp)
        model_dirs = []
        for i in range(args.models):
            archive = write_synthetic_artifact(work / "prefix", f"sig{i:04d}", GENES, seed=i)
            model_dirs.append(extract_artifact(archive, work / "models" / f"sig{i:04d}" / "model"))
        runs: list[Running] = []
        try:
            for config in CONFIGS:
                if config.name in wanted:
                    logger.info("starting %s and loading %d models", config.name, args.models)
                    runs.append(start(config, model_dirs, work))
            for run in runs:
                with ModelServerClient(run.url) as client:
                    for _ in range(args.warmup):
                        client.invoke(run.names[0], BODY)
            for round_no in range(args.rounds):
                logger.info("round %d/%d", round_no + 1, args.rounds)
                for run in runs:
                    warm_round(run, args.warm)
                for run in runs:
                    throughput_round(run, args.seconds, work)
            for run in runs:
                reload_round(run, model_dirs)
        finally:
            for run in runs:
                run.server.stop()
    summaries = {run.config.name: run.result.summary() for run in runs}
    report = {
        "machine": {"cpus": psutil.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 1e9, 1)},
        "parameters": vars(args)
        | {"out": str(args.out), "load_generator": "wrk" if shutil.which("wrk") else "threads"},
        "results": summaries,
        "raw": [asdict(run.result) for run in runs],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    names = list(summaries)
    lines = [f"| measure | {' | '.join(names)} |", "|---" * (len(names) + 1) + "|"]
    for key in next(iter(summaries.values())):
        lines.append(
            f"| {key} | " + " | ".join(f"{summaries[n][key]:.3f}".rstrip("0").rstrip(".") for n in names) + " |"
        )
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
