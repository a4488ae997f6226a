"""Typed settings from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from genesig.container.settings import read_settings, settings_environ
from genesig.errors import BadRequest


def test_defaults_and_sagemaker_port() -> None:
    settings = read_settings({"SAGEMAKER_BIND_TO_PORT": "9090", "GENESIG_MAX_ROWS": "50"})
    assert (settings.port, settings.max_rows, settings.front) == (9090, 50, "auto")


def test_overrides_win_and_none_is_ignored() -> None:
    settings = read_settings({"GENESIG_STATE_DIR": "/a"}, state_dir="/b", port=None)
    assert (settings.state_dir, settings.port) == ("/b", 8080)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("GENESIG_MAX_ROWS", "lots"),
        ("GENESIG_MAX_ROWS", "0"),
        ("SAGEMAKER_BIND_TO_PORT", "70000"),
        ("GENESIG_FRONT", "apache"),
    ],
)
def test_invalid_values_name_the_setting(key: str, value: str) -> None:
    with pytest.raises(BadRequest, match="invalid serving setting"):
        read_settings({key: value})


def test_round_trip_through_the_environment() -> None:
    settings = read_settings({"GENESIG_MEMORY_RESERVE_MB": "64"})
    assert read_settings(settings_environ(settings)) == settings


def test_model_server_finds_its_tools_without_an_activated_venv() -> None:
    import sys
    from pathlib import Path

    from genesig.container.model_server import model_server_environ

    env = model_server_environ(read_settings({}), 20000, {"PATH": "/usr/bin"})
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)
    assert env["MMS_INFERENCE_ADDRESS"] == "http://127.0.0.1:20000" and env["SAGEMAKER_MULTI_MODEL"] == "true"
    # Multi Model Server's request limit follows the front's, above it so that the front answers 413 first.
    assert int(env["MMS_MAX_REQUEST_SIZE"]) == 6 * 1024 * 1024 + 1024 * 1024
    smaller = model_server_environ(read_settings({"GENESIG_MAX_REQUEST_BYTES": "2000000"}), 20000, {})
    assert int(smaller["MMS_MAX_REQUEST_SIZE"]) == 2_000_000 + 1024 * 1024


def test_a_relative_state_folder_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Multi Model Server starts workers in the model's folder: a relative path handed down would name another."""
    monkeypatch.chdir(tmp_path)
    assert read_settings({"GENESIG_STATE_DIR": "state"}).state_dir == str(tmp_path / "state")
