"""The command line's own answers: a bad option is one line naming it, with exit status 2."""

from __future__ import annotations

import pytest

from genesig.cli import main


def test_a_bad_log_level_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--log-level", "loud", "demo"])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert "--log-level" in err and "invalid choice: 'LOUD'" in err and "Traceback" not in err


def test_every_command_and_subcommand_has_help() -> None:
    """``genesig COMMAND --help`` lists each subcommand with a line saying what it does."""
    import argparse

    from genesig.cli import build_parser

    missing = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {a.dest: a.help for a in action._choices_actions}
                for name, child in action.choices.items():
                    if path and not helps.get(name):
                        missing.append(f"{path} {name}")
                    walk(child, f"{path} {name}".strip())

    walk(build_parser(), "")
    assert not missing, missing


def test_an_abbreviated_option_is_refused_not_guessed(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["sync", "--work", "elsewhere"])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "unrecognized arguments: --work elsewhere" in err, err
