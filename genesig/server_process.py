"""Run ``genesig serve`` as a child process on a free loopback port: for the self-check, tests and benchmarks."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

from genesig.client import ModelServerClient
from genesig.errors import ModelServerError

logger = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """``genesig serve`` bound to 127.0.0.1; ``stop`` sends SIGTERM and reports any process left behind."""

    def __init__(
        self,
        state_dir: Path,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
        command: list[str] | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.command = command or [sys.executable, "-m", "genesig.cli", "serve"]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_env = env or {}
        self.log_path = log_path or state_dir / "serve.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._descendants: list[psutil.Process] = []

    def start(self, timeout_s: float = 120.0) -> ServerProcess:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(
            {
                "GENESIG_HOST": "127.0.0.1",
                "SAGEMAKER_BIND_TO_PORT": str(self.port),
                "GENESIG_STATE_DIR": str(self.state_dir),
            }
        )
        env.update(self.extra_env)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        with ModelServerClient(self.url, timeout=5) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise ModelServerError(
                        f"the model server exited with {self.process.returncode} at start; see {self.log_path}"
                    )
                if client.ping():
                    return self
                time.sleep(0.2)
        self.stop()
        raise ModelServerError(f"the model server was not healthy within {timeout_s:.0f} s; see {self.log_path}")

    def descendants(self) -> list[psutil.Process]:
        if self.process is None:
            return []
        try:
            return psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def stop(self, timeout_s: float = 30.0) -> list[int]:
        """SIGTERM the server, wait, and return the pids of any process of its tree still alive (killed then)."""
        if self.process is None:
            return []
        tree = self.descendants()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        _, alive = psutil.wait_procs(tree, timeout=2)
        for proc in alive:
            proc.kill()
        self.process = None
        return [p.pid for p in alive]

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
