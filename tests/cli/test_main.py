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
