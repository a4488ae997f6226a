"""Serving benchmark: load time, memory per loaded model, warm latency and throughput, side by side.

Configurations, running at the same time on the same machine with the same kind of artifacts:
  stock    - the AWS sample's approach (bench/baselines/stock_server.py): Multi Model Server through the toolkit,
             one backend process per loaded model, importing torch and running the model in torch
  genesig  - what the image serves: nginx in front, the worker pool (numpy), models opened on first use

genesig loads ``--signatures`` (1,000) models, stock ``--models`` (12: each is a process of its own). Memory per
model is the growth of the PSS of the server's processes divided by the models loaded, measured after every model
has answered in every worker. Latency and throughput are measured in interleaved rounds so that the machine's noise
hits both alike; the report gives medians over all requests. Throughput: wrk (C, one thread, 8 connections) when
installed, else Python threads; over 8 models for stock, spread over every loaded model for genesig.

Usage: python bench/serving.py [--signatures 1000] [--models 12] [--rounds 5] [--warm 1000] [--seconds 5]
Not a test: read ratios within one run, not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import json
import logging
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
    command: list[str] | None  # None: genesig serve
    spread: bool  # throughput over every loaded model, not 8


CONFIGS = [
    Config("stock", [sys.executable, str(BENCH_DIR / "baselines" / "stock_server.py")], spread=False),
    Config("genesig", None, spread=True),
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
            "models_loaded": self.models,
            "load_p50_ms": statistics.median(self.load_s) * 1000,
            "load_p99_ms": sorted(self.load_s)[int(0.99 * (len(self.load_s) - 1))] * 1000,
            "reload_after_unload_p50_ms": statistics.median(self.reload_s) * 1000,
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
    env = {"GENESIG_MODEL_SERVER_PORT": str(pick_internal_port(None)), "GENESIG_LOG_LEVEL": "WARNING"}
    server = ServerProcess(work / f"state-{config.name}", env=env, command=config.command).start()
    result = Result(config=config.name, models=len(model_dirs))
    names = [f"m{i:04d}" for i in range(len(model_dirs))]
    with ModelServerClient(server.url) as client:
        for _ in range(200):  # the first requests of a fresh server are slower for both (JIT, caches)
            client.ping()
        time.sleep(1.0)
        before = tree_pss(server)
        for name, model_dir in zip(names, model_dirs, strict=True):
            started = time.perf_counter()
            response = client.load(name, str(model_dir))
            result.load_s.append(time.perf_counter() - started)
            if response.status != 200:
                raise RuntimeError(f"{config.name}: load {name} -> {response.status} {response.body[:200]!r}")
        # Every model answers in every worker (a pool's worker opens a signature on first use): then measure.
        for _ in range(4):
            for name in names:
                client.invoke(name, BODY)
        time.sleep(1.0)
        result.memory_per_model_mb = (tree_pss(server) - before) / len(model_dirs) / 1e6
    return Running(config, server, server.url, names, result)


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
    names = run.names if run.config.spread else run.names[:8]
    wrk = shutil.which("wrk")
    if wrk:
        script = work / f"post-{run.config.name}.lua"
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
    parser.add_argument("--models", type=int, default=12, help="models the stock server loads (a process each)")
    parser.add_argument("--signatures", type=int, default=1000, help="models genesig loads")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warm", type=int, default=1000, help="requests per configuration per round")
    parser.add_argument("--warmup", type=int, default=3000, help="requests before measuring (JVM JIT)")
    parser.add_argument("--seconds", type=float, default=5.0, help="throughput seconds per round")
    parser.add_argument("--configs", default="stock,genesig")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "serving.json")
    args = parser.parse_args()
    configure_logging("INFO")
    wanted = args.configs.split(",")
    with tempfile.TemporaryDirectory(prefix="genesig-bench-") as tmp:
        work = Path(tmp)
        model_dirs = []
        for i in range(max(args.models, args.signatures)):
            archive = write_synthetic_artifact(work / "prefix", f"sig{i:04d}", GENES, seed=i)
            model_dirs.append(extract_artifact(archive, work / "models" / f"sig{i:04d}" / "model"))
        runs: list[Running] = []
        try:
            for config in CONFIGS:
                if config.name in wanted:
                    count = args.signatures if config.spread else args.models
                    logger.info("starting %s and loading %d models", config.name, count)
                    runs.append(start(config, model_dirs[:count], work))
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
                reload_round(run, model_dirs[: run.result.models])
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
