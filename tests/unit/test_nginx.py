"""The generated nginx configuration is valid and routes as intended."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from genesig.container.nginx import MAX_BODY_PATTERN, nginx_executable, render_config, write_config
from genesig.container.settings import read_settings


def test_nginx_accepts_the_generated_config(tmp_path: Path) -> None:
    executable = nginx_executable()
    assert executable, "nginx is installed by scripts/bootstrap.sh"
    config = write_config(read_settings({}, host="127.0.0.1", port=18999), tmp_path, 20001, 20002)
    result = subprocess.run(
        [executable, "-t", "-p", str(tmp_path), "-c", str(config), "-e", "stderr"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("length", "too_large"),
    [(0, False), (6_291_456, False), (6_999_999, False), (7_000_000, True), (9_999_999, True), (12_345_678, True)],
)
def test_body_limit_pattern(length: int, too_large: bool) -> None:
    assert bool(re.match(MAX_BODY_PATTERN, str(length))) is too_large


def test_invocations_go_to_the_pool_and_everything_else_to_the_gateway() -> None:
    text = render_config(read_settings({"GENESIG_STATE_DIR": "/state"}), Path("/s"), 20001, 20002)
    invoke = text.split("location ~ ^/models/", 1)[1].split("\n        }", 1)[0]
    assert "proxy_pass http://mms;" in invoke and "server 127.0.0.1:20001;" in text
    # Only signatures with an accept flag, rewritten to the pool's one model, named in a header; fence markers
    # from callers are cleared.
    assert '"~^[^/]{1,255}$" "/state/pool/accept/$model_name";' in text and "if (!-f $accept_flag)" in invoke
    assert "rewrite ^ /models/genesig-pool/invoke break;" in invoke
    assert "proxy_set_header X-Genesig-Model $model_header;" in invoke
    assert 'proxy_set_header X-Genesig-Drain "";' in invoke
    assert "location = /ping" not in text, "health is the gateway's (the pool must be registered)"
    assert "location / {\n            proxy_pass http://gateway;" in text and "server 127.0.0.1:20002;" in text
    assert "error_page 400" not in invoke and "error_page 413" not in invoke, "our handler's 4xx bodies pass through"


def test_fixed_error_bodies_are_the_one_renderers() -> None:
    from genesig.container.nginx import ANSWERS
    from genesig.errors import render_error

    text = render_config(read_settings({}), Path("/s"), 20001, 20002)
    body = render_error("model_not_found", "model $model_label is not loaded").decode()
    assert f"return 404 '{body}';" in text
    for answer in ANSWERS.values():
        status, quoted = answer.split(" ", 1)
        assert json.loads(quoted.strip("'"))["error"] and f"return {answer};" in text
