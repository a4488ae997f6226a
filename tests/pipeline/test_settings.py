"""One typed configuration: the command line's options and help come from it, bad values are named, SageMaker's
string hyperparameters are read back through it."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from genesig.cli.options import add_arguments, from_arguments
from genesig.errors import DataError
from genesig.pipeline.settings import CohortSettings, GateSettings, TrainSettings, as_strings, convert


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    for settings in (CohortSettings, TrainSettings, GateSettings):
        add_arguments(p, settings)
    return p


def test_defaults_live_in_one_place_and_reach_the_options() -> None:
    args = parser().parse_args([])
    assert from_arguments(args, TrainSettings) == TrainSettings()
    assert from_arguments(args, GateSettings).threshold == GateSettings().threshold == 0.6
    given = parser().parse_args(["--l2", "0.5", "--model", "mlp", "--gate-on", "test", "--time-column", "Months"])
    assert from_arguments(given, TrainSettings) == TrainSettings(l2=0.5, model="mlp")
    assert from_arguments(given, GateSettings).gate_on == "test"
    assert from_arguments(given, CohortSettings).time_column == "Months"
    assert "(default 0.6)" in " ".join(parser().format_help().split())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--threshold", "2"], "--threshold: expected a number <= 1.0"),
        (["--cv-folds", "1"], "--cv-folds: expected a whole number >= 2"),
        (["--test-fraction", "0.9"], "--test-fraction: expected a number <= 0.5"),
    ],
)
def test_a_bad_value_names_its_option(argv: list[str], message: str) -> None:
    args = parser().parse_args(argv)
    with pytest.raises(DataError) as raised:
        for settings in (CohortSettings, TrainSettings, GateSettings):
            from_arguments(args, settings)
    assert raised.value.message == message


def test_hyperparameters_round_trip_as_strings() -> None:
    settings = TrainSettings(l2=0.25, cv_repeats=3, model="mlp", hidden_units=8)
    assert convert(as_strings(settings), TrainSettings) == settings


def test_run_local_refuses_a_bad_setting_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "genesig.cli", "run-local", "--data", str(tmp_path / "x.csv"), "--threshold", "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().endswith("--threshold: expected a number <= 1.0")
