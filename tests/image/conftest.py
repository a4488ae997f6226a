"""A Docker engine and the two images, built the way build_and_push.sh builds them, for the image tests.

The engine is started here by process id (its own data root, exec root and socket; no bridge and no iptables,
so containers use the host's network) and stopped at the end. GENESIG_DOCKER_HOST reuses a running engine
instead, whose layer cache then makes reruns fast. The base image is made from Debian packages alone
(scripts/stand-in-base.sh), since Docker Hub may be out of reach; its Python is Debian 12's 3.11.2.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from tests.emulators import aws_env  # noqa: F401  (a fixture: moto behind the strict layer, an S3 server)

REPO = Path(__file__).resolve().parents[2]
BASE_IMAGE = "genesig-stand-in-base:bookworm"
TAG = "imagetest"
SERVE_IMAGE, TRAIN_IMAGE = f"genesig-mme:{TAG}", f"genesig-mme-train:{TAG}"
REPORT: dict[str, object] = {}


def docker(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, f"docker {' '.join(args)}: {result.stderr[-2000:]}"
    return result


def _engine_answers() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[str]:
    """DOCKER_HOST of an engine the tests may use; started and stopped here unless GENESIG_DOCKER_HOST is set."""
    previous = os.environ.get("DOCKER_HOST")
    if reuse := os.environ.get("GENESIG_DOCKER_HOST"):
        os.environ["DOCKER_HOST"] = reuse
        assert _engine_answers(), f"GENESIG_DOCKER_HOST={reuse} does not answer"
        yield reuse
        _restore("DOCKER_HOST", previous)
        return
    dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
    assert Path(dockerd).exists(), "dockerd is not installed: scripts/bootstrap.sh dev installs Debian's docker.io"
    assert shutil.which("docker"), "the docker command is not installed (Debian's docker.io has it)"
    # Short paths: unix socket names are limited to 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="gd-", dir="/tmp"))
    host = f"unix://{root}/docker.sock"
    log = open(root / "dockerd.log", "wb")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(
        [
            dockerd,
            "--data-root",
            str(root / "data"),
            "--exec-root",
            str(root / "exec"),
            "--host",
            host,
            "--pidfile",
            str(root / "dockerd.pid"),
            "--iptables=false",
            "--bridge=none",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    os.environ["DOCKER_HOST"] = host
    try:
        deadline = time.monotonic() + 60
        while not _engine_answers():
            assert process.poll() is None, f"dockerd exited: {(root / 'dockerd.log').read_text()[-2000:]}"
            assert time.monotonic() < deadline, "dockerd did not answer within 60 s"
            time.sleep(0.5)
        yield host
    finally:
        _stop_engine(process)
        log.close()
        _restore("DOCKER_HOST", previous)
        _unmount_under(root)  # dockerd leaves its network namespace mounted in the exec root
        subprocess.run(["rm", "-rf", str(root)], check=False)


def _stop_engine(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM dockerd (it stops its containers and containerd), SIGKILL what is left after 60 s."""
    tree = [process, *(psutil.Process(process.pid).children(recursive=True) if process.poll() is None else [])]
    process.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs([psutil.Process(p.pid) for p in tree if psutil.pid_exists(p.pid)], timeout=60)
    for proc in alive:
        proc.kill()
    process.wait(timeout=30)


def _unmount_under(root: Path) -> None:
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(f"{root}/")), reverse=True):
        subprocess.run(["umount", "--lazy", mount], check=False)


def _restore(key: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = value


def torch_wheel() -> Path | None:
    """torch's CPU wheel from pip's configured find-links folders (development machines keep one), if any."""
    result = subprocess.run(["pip", "config", "list"], capture_output=True, text=True)
    folders = re.findall(r"find-links='([^']+)'", result.stdout)
    for folder in {f for line in folders for f in line.split()}:
        found = sorted(Path(folder).glob("torch-2.13.0+cpu-cp311-*.whl"))
        if found:
            return found[0]
    return None


@dataclass
class Images:
    serve: str
    train: str
    build_log: str
    build_seconds: float
    sizes_mb: dict[str, int] = field(default_factory=dict)


@pytest.fixture(scope="session")
def images(docker_engine: str, tmp_path_factory: pytest.TempPathFactory) -> Images:
    started = time.monotonic()
    base = subprocess.run(
        [str(REPO / "scripts" / "stand-in-base.sh"), BASE_IMAGE], capture_output=True, text=True, timeout=900
    )
    assert base.returncode == 0, base.stderr[-3000:]
    base_seconds = time.monotonic() - started
    args = [str(REPO / "build_and_push.sh"), "--no-push", "--base-image", BASE_IMAGE]
    if docker("network", "inspect", "bridge", check=False).returncode != 0:
        args += ["--network", "host"]
    if Path("/etc/ssl/certs/ca-certificates.crt").is_file():  # a proxy that re-signs certificates is trusted
        args += ["--ca-bundle", "/etc/ssl/certs/ca-certificates.crt"]
    if (wheel := torch_wheel()) is not None:
        args += ["--torch-wheel", str(wheel)]
    started = time.monotonic()
    build = subprocess.run([*args, "genesig-mme", TAG], capture_output=True, text=True, timeout=2400)
    build_seconds = time.monotonic() - started
    log_path = tmp_path_factory.mktemp("image-build") / "build.log"
    log_path.write_text(build.stdout + build.stderr)
    assert build.returncode == 0, f"see {log_path}: {build.stderr[-3000:]}"
    assert build.stdout.split() == [SERVE_IMAGE, TRAIN_IMAGE]
    sizes = {
        image: int(docker("image", "inspect", "--format", "{{.Size}}", image).stdout) // 1_000_000
        for image in (SERVE_IMAGE, TRAIN_IMAGE)
    }
    REPORT.update(
        base_image_seconds=round(base_seconds, 1),
        build_seconds=round(build_seconds, 1),
        sizes_mb=sizes,
        torch_wheel=str(wheel) if wheel else "PyTorch's CPU index",
    )
    return Images(SERVE_IMAGE, TRAIN_IMAGE, build.stderr, build_seconds, sizes)


# The session's images (a debootstrap base and two builds, 5-10 minutes on 2 idle cores, longer on a busy machine)
# are built in the setup of whichever image test comes first: the suite's per-test timeout (300 s) is for a test, not
# for that, so every test that uses them gets this instead; the builds keep their own subprocess timeouts.
IMAGE_TEST_TIMEOUT_S = 3600


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "images" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.timeout(IMAGE_TEST_TIMEOUT_S))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORT:
        terminalreporter.write_sep("-", "genesig images")
        terminalreporter.write_line(json.dumps(REPORT))
