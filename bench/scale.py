"""Scale benchmark: hundreds to thousands of signature models behind one local MME endpoint.

For each model set (a folder of artifacts, e.g. ``bench/training.py --keep``'s mme-prefix), each
Zipf skew and each client count, the same traffic runs against two servers started one after
the other with the same memory budget:
  genesig - the image as shipped: a pool of numpy workers, each answering for any loaded model
  stock   - the AWS sample's approach (bench/baselines/stock_server.py): one backend process per loaded model,
            importing torch, with the 507 a memory-limited container needs
Each run: a fresh model server with GENESIG_MEMORY_LIMIT_MB (holding a fraction of the models),
a fresh local MME endpoint (``genesig local-endpoint``) in front of it, then ``--warmup`` seconds
of traffic that are not recorded and ``--duration`` seconds that are. Every client sends one
patient's values (JSON, the model's genes in manifest order) to a TargetModel drawn from a Zipf
distribution over the models (popularity ranks shuffled with a fixed seed, so the same models
are popular for both servers). A 507 that the endpoint resolves by unloading another model is
not an error for the caller; anything but 200 is.

Reported per run: requests/s; latency p50/p95/p99 of all requests, of warm hits and of cold
loads (the endpoint's X-Genesig-Model-Cache header says which); hit rate; loads and evictions
per minute (endpoint /metrics); peak memory (PSS of every server process, sampled each second);
models resident (mean and peak); statuses. Then the ratio genesig / stock for each figure.

Usage: python bench/scale.py --set go-1000=DIR [--set hallmark-50=DIR ...] [--skews 0.8,1.2]
           [--clients 1,8] [--duration 45] [--warmup 15] [--memory-limit-mb 2048] [--out FILE]
Runs are merged into --out (same set/skew/clients/server replaced), so one file can collect
several invocations. Not a test: read ratios within one run, not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from genesig.artifact import read_artifact
from genesig.client import ModelServerClient
from genesig.container.memory import pss_bytes
from genesig.container.server import pick_internal_port
from genesig.local_endpoint import CACHE_HEADER, start_local_endpoint
from genesig.logs import configure_logging
from genesig.server_process import ServerProcess

logger = logging.getLogger("bench.scale")
BENCH_DIR = Path(__file__).resolve().parent
SERVERS: dict[str, list[str] | None] = {
    "genesig": None,  # genesig serve
    "stock": [sys.executable, str(BENCH_DIR / "baselines" / "stock_server.py")],
}
PERCENTILES = (50, 95, 99)


@dataclass
class ModelSet:
    label: str
    prefix: Path
    targets: list[str]
    bodies: list[bytes]


@dataclass
class Record:
    at_s: float
    latency_ms: float
    status: int
    cache: str
    target: int


class Sampler(threading.Thread):
    """Each second: PSS of the server's process tree and the endpoint's loaded-model count."""

    def __init__(self, server: ServerProcess, endpoint_url: str) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.endpoint_url = endpoint_url
        self.peak_bytes = 0
        self.resident: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        assert self.server.process is not None
        root = self.server.process.pid
        with ModelServerClient(self.endpoint_url, timeout=10) as client:
            while not self.stop.wait(1.0):
                pids = [root] + [p.pid for p in self.server.descendants()]
                self.peak_bytes = max(self.peak_bytes, sum(pss_bytes(pid) for pid in pids))
                try:
                    self.resident.append(client.request("GET", "/metrics").json()["LoadedModelCount"])
                except (OSError, ValueError):
                    pass


def load_model_set(label: str, prefix: Path, seed: int) -> ModelSet:
    """Every artifact in the prefix, with a one-patient JSON body in that model's gene order."""
    rng = np.random.default_rng(seed)
    targets, bodies = [], []
    for path in sorted(prefix.glob("*.tar.gz")):
        genes = read_artifact(path).manifest.genes
        values = np.round(rng.gamma(0.9, 6.0, size=len(genes)), 3)
        targets.append(path.name)
        bodies.append(json.dumps({"inputs": [values.tolist()]}).encode())
    if not targets:
        raise SystemExit(f"no *.tar.gz artifacts in {prefix}")
    logger.info("%s: %d models from %s", label, len(targets), prefix)
    return ModelSet(label, prefix, targets, bodies)


def zipf_probabilities(n: int, skew: float, seed: int) -> np.ndarray:
    """P(rank k) proportional to 1/k^skew, ranks assigned to models by a fixed shuffle."""
    weights = 1.0 / np.arange(1, n + 1) ** skew
    shuffled = np.empty(n)
    shuffled[np.random.default_rng(seed).permutation(n)] = weights / weights.sum()
    return shuffled


def client_loop(
    url: str, models: ModelSet, probabilities: np.ndarray, seed: int, start: float, stop_at: float, out: list[Record]
) -> None:
    rng = np.random.default_rng(seed)
    with ModelServerClient(url, timeout=600) as client:
        while True:
            for index in rng.choice(len(models.targets), size=256, p=probabilities):
                began = time.monotonic()
                if began >= stop_at:
                    return
                headers = {
                    "Content-Type": "application/json",
                    "X-Amzn-SageMaker-Target-Model": models.targets[index],
                }
                try:
                    response = client.request("POST", "/endpoints/bench/invocations", models.bodies[index], headers)
                    status, cache = response.status, response.headers.get(CACHE_HEADER.lower(), "")
                except OSError:
                    status, cache = 599, ""  # connection failure: counted as an error
                out.append(Record(began - start, (time.monotonic() - began) * 1000, status, cache, int(index)))


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {f"p{p}": None for p in PERCENTILES}
    found = np.percentile(values, PERCENTILES)
    return {f"p{p}": round(float(v), 2) for p, v in zip(PERCENTILES, found, strict=True)}


def after_first_touch(records: list[Record]) -> list[Record]:
    """The requests sent after their model's first request was answered: a model nobody asked for before is a
    miss on any server, so this is the hit rate the server is responsible for."""
    first_done: dict[int, float] = {}
    for r in records:
        done = r.at_s + r.latency_ms / 1000
        first_done[r.target] = min(first_done.get(r.target, done), done)
    return [r for r in records if r.at_s >= first_done[r.target]]


def one_run(
    server_name: str, models: ModelSet, skew: float, clients: int, args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    env = {
        "GENESIG_MEMORY_LIMIT_MB": str(args.memory_limit_mb),
        "GENESIG_MODEL_SERVER_PORT": str(pick_internal_port(None)),
        "GENESIG_LOG_LEVEL": "WARNING",
    }
    run_dir = Path(tempfile.mkdtemp(prefix=f"{server_name}-", dir=work))
    server = ServerProcess(run_dir / "state", env=env, command=SERVERS[server_name]).start()
    endpoint, url = start_local_endpoint(models.prefix, server.url, run_dir, cache_max_mb=args.cache_max_mb)
    sampler = Sampler(server, url)
    probabilities = zipf_probabilities(len(models.targets), skew, args.seed)
    records: list[list[Record]] = [[] for _ in range(clients)]
    try:
        with ModelServerClient(url, timeout=30) as metrics_client:
            start = time.monotonic()
            measure_from = start + args.warmup
            stop_at = measure_from + args.duration
            threads = [
                threading.Thread(
                    target=client_loop,
                    args=(url, models, probabilities, args.seed * 1000 + i, start, stop_at, records[i]),
                )
                for i in range(clients)
            ]
            for thread in threads:
                thread.start()
            time.sleep(max(0.0, measure_from - time.monotonic()))
            before = metrics_client.request("GET", "/metrics").json()
            sampler.start()
            for thread in threads:
                thread.join()
            measured_s = time.monotonic() - measure_from  # includes the last requests' tails
            after = metrics_client.request("GET", "/metrics").json()
            sampler.stop.set()
            sampler.join()
    finally:
        endpoint.send_signal(signal.SIGTERM)
        try:
            endpoint.wait(timeout=60)
        except Exception:
            endpoint.kill()
        leftovers = server.stop()
        if args.logs:
            keep = args.logs / f"{models.label}-{skew}-{clients}-{server_name}"
            shutil.rmtree(keep, ignore_errors=True)
            shutil.copytree(run_dir, keep, ignore=shutil.ignore_patterns("cache-*", "tmp"))
        shutil.rmtree(run_dir, ignore_errors=True)
    everything = [r for per_client in records for r in per_client]
    measured = [r for r in everything if r.at_s >= args.warmup]
    ok = [r for r in measured if r.status == 200]
    touched = {id(r) for r in after_first_touch(everything)}
    ok_touched = [r for r in ok if id(r) in touched]
    hits = [r.latency_ms for r in ok if r.cache == "hit"]
    misses = [r.latency_ms for r in ok if r.cache == "miss"]
    minutes = measured_s / 60
    return {
        "set": models.label,
        "models": len(models.targets),
        "skew": skew,
        "clients": clients,
        "server": server_name,
        "requests": len(measured),
        "requests_per_s": round(len(ok) / measured_s, 2),
        "latency_ms": percentiles([r.latency_ms for r in ok]),
        "warm_hit_latency_ms": percentiles(hits),
        "cold_load_latency_ms": percentiles(misses),
        "hit_rate": round(len(hits) / len(ok), 4) if ok else None,
        "hit_rate_after_first_touch": (
            round(sum(r.cache == "hit" for r in ok_touched) / len(ok_touched), 4) if ok_touched else None
        ),
        "loads_per_min": round((after["ModelLoads"] - before["ModelLoads"]) / minutes, 1),
        "evictions_per_min": round((after["ModelEvictions"] - before["ModelEvictions"]) / minutes, 1),
        "peak_memory_mb": round(sampler.peak_bytes / 1e6, 1),
        "resident_models_mean": round(statistics.fmean(sampler.resident), 1) if sampler.resident else None,
        "resident_models_max": max(sampler.resident, default=None),
        "errors": len(measured) - len(ok),
        "statuses": dict(Counter(str(r.status) for r in measured)),
        "leftover_processes": len(leftovers),
    }


RATIO_KEYS = (
    "requests_per_s",
    "hit_rate",
    "loads_per_min",
    "evictions_per_min",
    "peak_memory_mb",
    "resident_models_mean",
)


def ratios(ours: dict[str, Any], stock: dict[str, Any]) -> dict[str, float | None]:
    """genesig / stock for every number (latency figures flattened as e.g. cold_load_latency_ms.p50)."""

    def flat(row: dict[str, Any]) -> dict[str, float]:
        values = {k: row[k] for k in RATIO_KEYS}
        for group in ("latency_ms", "warm_hit_latency_ms", "cold_load_latency_ms"):
            values |= {f"{group}.{k}": v for k, v in row[group].items()}
        return values

    a, b = flat(ours), flat(stock)
    return {k: round(a[k] / b[k], 3) if a[k] is not None and b[k] else None for k in a}


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| set | skew | clients | server | req/s | p50 / p99 ms (all) | warm hit p50 / p99 ms |"
        " cold load p50 / p99 ms | hit rate | loads/min | evictions/min | peak MB | resident | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def pair(d: dict[str, float | None]) -> str:
        return f"{d['p50']} / {d['p99']}"

    for r in rows:
        lines.append(
            f"| {r['set']} | {r['skew']} | {r['clients']} | {r['server']} | {r['requests_per_s']} | "
            f"{pair(r['latency_ms'])} | {pair(r['warm_hit_latency_ms'])} | {pair(r['cold_load_latency_ms'])} | "
            f"{r['hit_rate']} | {r['loads_per_min']} | {r['evictions_per_min']} | {r['peak_memory_mb']} | "
            f"{r['resident_models_mean']} | {r['errors']} |"
        )
    return "\n".join(lines)


def paired_markdown(rows: list[dict[str, Any]]) -> str:
    """One line per configuration, "genesig / stock", for the figures that matter most (README table)."""
    runs = {(r["set"], r["skew"], r["clients"], r["server"]): r for r in rows}
    lines = [
        "| models | Zipf skew | clients | req/s (×) | hit rate (after first touch) | cold load p50 / p99 (s) |"
        " warm hit p50 / p99 (ms) |"
        " loads / evictions per min | peak memory (MB) | resident models | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def num(value: float | None, digits: int) -> str:
        return "–" if value is None else f"{value:.{digits}f}"

    def pair(ours: Any, stock: Any, digits: int) -> str:
        return f"**{num(ours, digits)}** / {num(stock, digits)}"

    def seconds(row: dict[str, Any], p: str) -> float | None:
        ms = row["cold_load_latency_ms"][p]
        return None if ms is None else ms / 1000

    for (label, skew, clients, server), ours in runs.items():
        stock = runs.get((label, skew, clients, "stock"))
        if server != "genesig" or stock is None:
            continue
        speedup = ours["requests_per_s"] / stock["requests_per_s"] if stock["requests_per_s"] else float("inf")
        warm_ours, warm_stock = ours["warm_hit_latency_ms"], stock["warm_hit_latency_ms"]
        lines.append(
            f"| {label} | {skew} | {clients} | {pair(ours['requests_per_s'], stock['requests_per_s'], 1)} "
            f"({speedup:.1f}×) | {pair(ours['hit_rate'], stock['hit_rate'], 2)} "
            f"({num(ours.get('hit_rate_after_first_touch'), 3)} / {num(stock.get('hit_rate_after_first_touch'), 3)}) | "
            f"**{num(seconds(ours, 'p50'), 2)} / {num(seconds(ours, 'p99'), 2)}** vs "
            f"{num(seconds(stock, 'p50'), 2)} / {num(seconds(stock, 'p99'), 2)} | "
            f"**{num(warm_ours['p50'], 1)} / {num(warm_ours['p99'], 1)}** vs "
            f"{num(warm_stock['p50'], 1)} / {num(warm_stock['p99'], 1)} | "
            f"**{num(ours['loads_per_min'], 0)} / {num(ours['evictions_per_min'], 0)}** vs "
            f"{num(stock['loads_per_min'], 0)} / {num(stock['evictions_per_min'], 0)} | "
            f"{pair(ours['peak_memory_mb'], stock['peak_memory_mb'], 0)} | "
            f"{pair(ours['resident_models_mean'], stock['resident_models_mean'], 0)} | "
            f"{ours['errors']} / {stock['errors']} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", action="append", default=[], help="LABEL=FOLDER of *.tar.gz artifacts")
    parser.add_argument("--report", action="store_true", help="only print --out's results as tables")
    parser.add_argument("--skews", default="0.8,1.2")
    parser.add_argument("--clients", default="1,8")
    parser.add_argument("--servers", default="genesig,stock")
    parser.add_argument("--duration", type=float, default=45.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=15.0, help="unrecorded seconds before measuring")
    parser.add_argument("--memory-limit-mb", type=int, default=2048, help="GENESIG_MEMORY_LIMIT_MB of the server")
    parser.add_argument("--cache-max-mb", type=int, default=2048, help="the endpoint's disk cache")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--logs", type=Path, help="keep each run's endpoint and server logs here")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "scale.json")
    args = parser.parse_args()
    configure_logging("INFO")
    logging.getLogger("genesig").setLevel(logging.WARNING)
    if args.report:
        runs = json.loads(args.out.read_text())["runs"]
        sys.stdout.write(markdown(runs) + "\n\n" + paired_markdown(runs) + "\n")
        return 0
    if not args.set:
        parser.error("give at least one --set LABEL=FOLDER (or --report)")
    servers = args.servers.split(",")
    unknown = set(servers) - set(SERVERS)
    if unknown:
        parser.error(f"unknown --servers {', '.join(sorted(unknown))}; choose from {', '.join(SERVERS)}")
    sets = []
    for spec in args.set:
        label, _, folder = spec.partition("=")
        if not folder:
            parser.error(f"--set wants LABEL=FOLDER, got {spec!r}")
        sets.append(load_model_set(label, Path(folder), args.seed))
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {"runs": []}
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="genesig-scale-") as tmp:
        for models in sets:
            for skew in (float(s) for s in args.skews.split(",")):
                for clients in (int(c) for c in args.clients.split(",")):
                    pair: dict[str, dict[str, Any]] = {}
                    for server_name in servers:  # back to back: the machine's noise hits both alike
                        logger.info("%s skew=%s clients=%d: %s", models.label, skew, clients, server_name)
                        row = one_run(server_name, models, skew, clients, args, Path(tmp))
                        logger.info(
                            "  %.1f req/s, hit rate %s, errors %d",
                            row["requests_per_s"],
                            row["hit_rate"],
                            row["errors"],
                        )
                        pair[server_name] = row
                        rows.append(row)
                    if "genesig" in pair and "stock" in pair:
                        pair["genesig"]["ratio_to_stock"] = ratios(pair["genesig"], pair["stock"])
    key = ("set", "skew", "clients", "server")
    fresh = {tuple(r[k] for k in key) for r in rows}
    merged = [r for r in previous["runs"] if tuple(r[k] for k in key) not in fresh] + rows
    report = {
        "machine": {"cpus": psutil.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 1e9, 1)},
        "parameters": {
            k: v for k, v in vars(args).items() if k in ("duration", "warmup", "memory_limit_mb", "cache_max_mb")
        },
        "runs": merged,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    sys.stdout.write(markdown(merged) + "\n\n" + paired_markdown(merged) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
