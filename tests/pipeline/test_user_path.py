"""The user's path through the CLI, as a user meets it: a real process, its exit code, and one line on stderr naming
the problem and the fix — never a traceback."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from genesig.pipeline.registry import LocalRegistry

# No AWS set-up at all: no region, no credentials, no config files.
NO_AWS = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | {
    "AWS_CONFIG_FILE": "/nonexistent",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    "COLUMNS": "200",
}


def genesig(*args: str, cwd: Path, prelude: str = "") -> subprocess.CompletedProcess[str]:
    code = f"import sys\n{prelude}\nfrom genesig.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=NO_AWS
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def patients(tmp_path: Path) -> Path:
    path = tmp_path / "patients.csv"
    path.write_text("Case_ID,LRIG1,HPGD,GDF15\nP1,3.2,0,11.5\n")
    return path


def test_a_missing_extra_is_named_with_how_to_install_it(tmp_path: Path) -> None:
    line = one_line_error(
        genesig("pipeline", "definition", cwd=tmp_path, prelude="sys.modules['sagemaker'] = None  # not installed")
    )
    assert "`pipeline` set-up" in line and "scripts/bootstrap.sh pipeline" in line and "genesig-mme[pipeline]" in line


def test_predict_refuses_an_output_file_it_cannot_write_in_the_asked_format(tmp_path: Path, patients: Path) -> None:
    line = one_line_error(
        genesig(
            "predict",
            "--target-model",
            "x-v1.tar.gz",
            "--input",
            str(patients),
            "--endpoint",
            "local",
            "--url",
            "http://127.0.0.1:9",
            "--out",
            "out.txt",
            cwd=tmp_path,
        )  # fmt: skip
    )
    assert "--out out.txt" in line and ".csv or a .json" in line
    assert not (tmp_path / "out.txt").exists()


def test_predict_by_signature_against_a_local_endpoint_resolves_in_the_local_registry_without_aws(
    tmp_path: Path, patients: Path, make_archive: Callable[..., Path]
) -> None:
    registry = LocalRegistry(tmp_path / "work" / "registry")
    registry.create_model_package("metagene_19", make_archive("metagene_19"), metrics={}, approval_status="Approved")
    registry.create_model_package("metagene_19", make_archive("metagene_19", version=2, seed=1), metrics={})  # pending
    common = ("--input", str(patients), "--endpoint", "local", "--url", "http://127.0.0.1:9", "--workdir", "work")
    # Nothing listens on port 9: the line names the TargetModel it resolved (the latest Approved: version 1) and
    # the connection, with no AWS region or credentials asked for.
    line = one_line_error(genesig("predict", "--signature", "metagene_19", *common, cwd=tmp_path))
    assert "metagene_19-v1.tar.gz" in line and "region" not in line and "credentials" not in line
    unknown = one_line_error(genesig("predict", "--signature", "nope", *common, cwd=tmp_path))
    assert "'nope' has no Approved version" in unknown and "genesig registry approve nope VERSION" in unknown
    elsewhere = one_line_error(genesig("predict", "--signature", "metagene_19", *common[:-1], "nowhere", cwd=tmp_path))
    assert "no local registry in nowhere" in elsewhere and "--workdir" in elsewhere


def test_a_large_run_prints_a_compact_summary_and_writes_the_full_table(tmp_path: Path) -> None:
    import csv
    import json

    from genesig.pipeline.signatures import GeneSignature
    from genesig.pipeline.synthetic import SyntheticSpec, write_synthetic_cohort

    long = "positive_regulation_of_a_very_long_gene_ontology_process_name_" * 2 + "GO_0000001"  # 133 characters
    signatures = [GeneSignature(f"{long}_{i}", tuple(f"G{i}_{j}" for j in range(3))) for i in range(45)]
    signatures.append(GeneSignature("mostly_absent", ("G0_0", "ABSENT1", "ABSENT2")))
    data = write_synthetic_cohort(tmp_path / "c.csv", signatures[:-1], SyntheticSpec(seed=3, planted={}))
    sets = tmp_path / "sets.json"
    sets.write_text(json.dumps({s.name: list(s.genes) for s in signatures}))
    args = ("run-local", "--data", str(data), "--signatures", str(sets), "--cv-repeats", "1", "--workdir", "w")
    run = genesig(*args, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "the top 15 of 46 by CV mean" in out and "46 signatures:" in out and "1 skipped" in out
    # Pure noise: nothing passes, so each of the table's 15 signatures is followed by its reason and what changes it.
    assert "Nothing passed. Why, signature by signature:" in out and "… and 31 more in w/summary.csv" in out
    assert "(most held back: " in out and "change with --threshold" in out
    assert len(out.splitlines()) < 80, out
    assert "│││" not in out and "…" in out, "long names end in an ellipsis; no column is squeezed away"
    with open(tmp_path / "w" / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    outcomes = {"passed", "below threshold", "not significant", "skipped"}
    assert len(rows) == 46 and {r["outcome"] for r in rows} <= outcomes
    assert next(r for r in rows if r["signature"] == "mostly_absent")["outcome"] == "skipped"
    # Both tests are on by default: every evaluated signature has p and q of each.
    evaluated = [r for r in rows if r["outcome"] != "skipped"]
    assert all(0 < float(r["p_value"]) <= float(r["q_value"]) <= 1 for r in evaluated)
    assert all(0 < float(r["competitive_p"]) <= float(r["competitive_q"]) <= 1 for r in evaluated)
    assert (tmp_path / "w" / "significance.png").is_file()
    quiet = genesig(*args[:-1], "w2", "--quiet", cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stdout.count("\n") == 1 and "46 signatures:" in quiet.stdout, quiet.stdout


def test_a_local_endpoint_over_a_missing_prefix_is_refused_before_anything_starts(tmp_path: Path) -> None:
    line = one_line_error(genesig("local-endpoint", "--prefix", "no-such-folder", "--port", "9", cwd=tmp_path))
    assert "--prefix no-such-folder: no such folder" in line


def test_deploying_a_group_with_nothing_approved_names_how_to_approve(tmp_path: Path) -> None:
    (tmp_path / "registry").mkdir()
    line = one_line_error(
        genesig("step", "deploy", "--registry", "registry", "--group", "metagene_19", "--prefix", "p", cwd=tmp_path)
    )
    assert "no Approved package in registry" in line and "genesig registry approve metagene_19 VERSION" in line


def test_all_is_a_signature_name_and_every_signature_is_the_default(tmp_path: Path) -> None:
    """Item 5: `--signature ALL` runs the built-in all-genes signature alone; leaving --signature out runs them all."""
    import json

    from genesig.pipeline.signatures import default_signatures
    from genesig.pipeline.synthetic import SyntheticSpec, write_synthetic_cohort

    data = write_synthetic_cohort(tmp_path / "c.csv", default_signatures(), SyntheticSpec(seed=2, planted={}))
    base = ("run-local", "--data", str(data), "--cv-repeats", "1", "--l2", "0.1", "--quiet")
    alone = genesig(*base, "--signature", "ALL", "--workdir", "one", cwd=tmp_path)
    assert alone.returncode == 0, alone.stderr
    assert alone.stdout.startswith("1 signature: "), alone.stdout  # not "1 signatures"
    one = json.loads((tmp_path / "one" / "summary.json").read_text())["signatures"]
    assert [r["signature"] for r in one] == ["ALL"]
    every = genesig(*base, "--workdir", "every", cwd=tmp_path)
    assert every.returncode == 0, every.stderr
    names = [r["signature"] for r in json.loads((tmp_path / "every" / "summary.json").read_text())["signatures"]]
    assert names == [s.name for s in default_signatures()]
    unknown = one_line_error(genesig(*base, "--signature", "EVERY", cwd=tmp_path))
    assert "no signature named 'EVERY'" in unknown
    # Every signature skipped (none of its genes in the cohort): the run evaluated nothing, exit 1, not 0.
    elsewhere = tmp_path / "elsewhere.gmt"
    elsewhere.write_text("OTHER\tnone\tNOT_A_GENE_1\tNOT_A_GENE_2\tNOT_A_GENE_3\n")
    skipped = genesig(*base, "--signatures", str(elsewhere), "--workdir", "skipped", cwd=tmp_path)
    assert skipped.returncode == 1, skipped.stderr
    assert json.loads((tmp_path / "skipped" / "summary.json").read_text())["signatures"][0]["outcome"] == "skipped"


def test_help_opens_with_what_the_tool_does_and_demo_output_is_ignored_by_git(tmp_path: Path) -> None:
    """Item 8: `genesig --help` opens with the product, not a developer note; genesig-demo/ is not committed."""
    shown = genesig("--help", cwd=tmp_path)
    assert shown.returncode == 0
    assert shown.stdout.splitlines()[2].startswith("Train, gate, register and serve one cancer-survival model")
    root = Path(__file__).resolve().parents[2]
    ignored = subprocess.run(["git", "check-ignore", "-q", "genesig-demo/patients.csv"], cwd=root)
    assert ignored.returncode == 0


def test_a_local_endpoint_on_a_port_in_use_is_refused_before_anything_starts(tmp_path: Path) -> None:
    import socket

    (tmp_path / "prefix").mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        line = one_line_error(genesig("local-endpoint", "--prefix", "prefix", "--port", port, cwd=tmp_path))
    assert f"--port {port} on 127.0.0.1 is not available (address already in use)" in line
    assert "pick another --port" in line


@pytest.mark.parametrize(
    ("args", "problem", "where"),
    [
        (("run-local", "--data", "x.csv", "--target", "nope"), "invalid choice: 'nope'", "genesig run-local --help"),
        (("nosuch",), "invalid choice: 'nosuch'", "genesig --help"),
        (("step", "evaluate"), "required: --prepared", "genesig step evaluate --help"),
        (("run-local", "--data", "x.csv", "--jobs", "two"), "--jobs: invalid int value", "genesig run-local --help"),
        (("run-local", "--data", "x.csv", "--bogus"), "unrecognized arguments: --bogus", "genesig run-local --help"),
        (("step", "gate", "--evaluation", "e", "--bogus"), "unrecognized arguments", "genesig step gate --help"),
    ],
)
def test_bad_arguments_are_one_line_naming_the_problem_and_the_help(
    tmp_path: Path, args: tuple[str, ...], problem: str, where: str
) -> None:
    line = one_line_error(genesig(*args, cwd=tmp_path))
    assert problem in line and f"see `{where}`" in line, line
    assert "usage:" not in line


@pytest.mark.parametrize(
    ("permutations", "competitive", "expected"),
    [
        (200, "report", "cv_mean >= 0.6 and q <= 0.1 (outcome permuted)"),
        (200, "gate", "cv_mean >= 0.6 and q <= 0.1 (outcome permuted) and q vs random gene sets <= 0.1"),
        (0, "off", "cv_mean >= 0.6 alone (--permutations 0: no significance test)"),
    ],
)
def test_the_table_title_names_every_part_of_the_gate_that_decides(
    permutations: int, competitive: str, expected: str
) -> None:
    from genesig.pipeline.settings import GateSettings
    from genesig.presentation import gate_text

    gate = GateSettings(threshold=0.6, gate_on="cv_mean", fdr=0.1, permutations=permutations, competitive=competitive)
    assert gate_text(gate) == expected


def test_help_lists_every_command_once_under_its_group_with_the_exit_codes(tmp_path: Path) -> None:
    from genesig.cli import COMMAND_GROUPS, build_parser

    shown = genesig("--help", cwd=tmp_path).stdout
    groups = shown.split("getting started:", 1)[1].split("exit codes:", 1)[0]
    listed = [line.split()[0] for line in groups.splitlines() if line.startswith("  ")]
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert sorted(listed) == sorted(commands), "every command once"
    assert [name for names in COMMAND_GROUPS.values() for name in names] == listed
    assert "exit codes: 0 done" in shown and "2 usage or input error" in shown
