"""The README's local commands, run as written from a clean install of the set-up the README says they need.

A copy of the repository (the files git tracks, no ``.venv``) gets the quick start's own first command,
``scripts/bootstrap.sh train && .venv/bin/genesig demo``: a new virtualenv with only the ``train`` set-up (serve
plus the pipeline's step code, no SageMaker SDK). Every later block runs in that copy and that virtualenv, in the
README's order: ``run-local`` and the local registry, the steps one at a time, the local MME endpoint with
``genesig predict`` and the boto3 example, and the one-line answer for a command that needs another set-up.
The SageMaker walkthrough is run as written by ``tests/aws/test_readme_walkthrough.py``; the image commands by
``tests/image``.
"""

from __future__ import annotations

import ast
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from genesig.server_process import free_port

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def bash_blocks(heading: str) -> list[str]:
    """The ```bash blocks of the README section under ``heading`` (up to the next heading of the same level)."""
    level = heading.split(" ", 1)[0]
    start = README.index(f"\n{heading}\n")
    after = README[start + len(heading) + 2 :]
    end = re.search(rf"\n{level} ", after)
    section = after[: end.start()] if end else after
    return re.findall(r"```bash\n(.*?)```", section, flags=re.S)


def commands(block: str) -> list[str]:
    """The block's commands, one per entry: continuation lines joined, comment lines and optional ``[--flag value]``
    parts dropped."""
    joined = block.replace("\\\n", " ")
    lines = [line.strip() for line in joined.splitlines()]
    return [re.sub(r"\s\[[^\]]*\]", "", line) for line in lines if line and not line.startswith("#")]


@pytest.fixture(scope="module")
def clean_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("readme") / "genesig-mme"
    tracked = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (entry.decode() for entry in tracked)):
        source = ROOT / name
        if source.is_file():
            target = copy / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
            target.chmod(source.stat().st_mode)
    return copy


def user_env(copy: Path) -> dict[str, str]:
    """A shell as a new user has it: the copy's venv on PATH (the README's bare ``genesig``), no AWS set-up."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "VIRTUAL_ENV", "GENESIG_"))}
    return env | {
        "PATH": f"{copy / '.venv' / 'bin'}:{os.environ['PATH']}",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "COLUMNS": "200",
        "TERM": "dumb",
    }


def run(command: str, copy: Path, ok: tuple[int, ...] = (0,), timeout: float = 600) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["bash", "-c", f"set -euo pipefail\n{command}"],
        cwd=copy,
        env=user_env(copy),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode in ok, f"`{command}` exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr, f"`{command}`:\n{done.stderr[-3000:]}"
    return done


@pytest.mark.timeout(1800)
def test_the_readme_local_commands_run_as_written_from_a_clean_quick_start_install(clean_copy: Path) -> None:
    copy = clean_copy

    # Quick start: set-up and the demo, exactly the README's first command.
    [quick_start] = commands(bash_blocks("## Quick start")[0])
    assert quick_start == "scripts/bootstrap.sh train && .venv/bin/genesig demo"
    done = run(quick_start, copy, timeout=1200)
    installed = run(".venv/bin/python -m pip list --format=freeze", copy).stdout
    assert "torch==" in installed and "sagemaker==" not in installed  # only the train set-up
    assert "deployed" in done.stdout and (copy / "genesig-demo" / "patients.csv").is_file(), done.stdout[-3000:]

    # Training pipeline on one machine: run-local, the registry, approve and sync; then the steps one at a time.
    run_local, steps = bash_blocks("## Training pipeline on one machine (`genesig run-local`)")[:2]
    for command in commands(run_local):
        run(command, copy)
    assert (copy / "genesig-work" / "mme-prefix" / "metagene_19-v1.tar.gz").is_file()
    for command in commands(steps):
        # The re-gate at a stricter threshold may fail: the README says it then exits 3.
        run(command, copy, ok=(0, 3) if " gate " in command else (0,))
    assert (copy / "mme-prefix" / "metagene_19-v1.tar.gz").is_file()

    # The local MME endpoint, then `genesig predict` and the boto3 example against it.
    [endpoint_block] = bash_blocks("## Local MME endpoint and `genesig demo`")[:1]
    endpoint_command, *client_commands = commands(endpoint_block)
    port = str(free_port())
    endpoint = subprocess.Popen(
        ["bash", "-c", f"exec {endpoint_command.replace('8081', port)}"],
        cwd=copy,
        env=user_env(copy),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/ping", endpoint)
        for command in client_commands:
            answer = run(command.replace("8081", port), copy).stdout
            assert "metagene_19 v1: probability" in answer, answer
        snippet = re.search(r"```python\n(.*?)```", README[README.index("## Local MME endpoint") :], re.S)
        assert snippet is not None
        script = copy / "readme_boto3.py"
        script.write_text(print_last_answer(snippet.group(1).replace("8081", port)))
        boto3_answer = run(f".venv/bin/python {script.name}", copy).stdout
        assert "probability" in boto3_answer, boto3_answer
    finally:
        os.killpg(endpoint.pid, signal.SIGTERM)
        endpoint.wait(timeout=60)
    assert endpoint.returncode == 0, endpoint.stderr.read() if endpoint.stderr else ""

    # A command that needs the SageMaker SDK, in this install: one line naming the set-up to add.
    needs_sdk = subprocess.run(
        [str(copy / ".venv" / "bin" / "genesig"), "pipeline", "definition", "--out", "definition.json"],
        cwd=copy,
        env=user_env(copy),
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = needs_sdk.stderr.strip().splitlines()
    assert needs_sdk.returncode == 2 and len(lines) == 1, needs_sdk.stderr
    assert "scripts/bootstrap.sh pipeline" in lines[0]


def print_last_answer(snippet: str) -> str:
    """The snippet as written, with the answer of its last call (an expression statement) printed."""
    tree = ast.parse(snippet)
    last = tree.body[-1]
    assert isinstance(last, ast.Expr), "the README's boto3 example ends with the invoke_endpoint call"
    tree.body[-1] = ast.parse(f'print(({ast.unparse(last.value)})["Body"].read().decode())').body[0]
    return ast.unparse(tree) + "\n"


def wait_for(url: str, process: subprocess.Popen[str], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout_s:.0f} s")
