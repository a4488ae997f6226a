"""The generated nginx configuration is valid and routes as intended."""

from __future__ import annotations

import json
import random
import re
import subprocess
from pathlib import Path

import pytest

from genesig.container.nginx import above_pattern, nginx_executable, render_config, write_config
from genesig.container.settings import read_settings


def test_nginx_accepts_the_generated_config(tmp_path: Path) -> None:
    executable = nginx_executable()
    assert executable, "nginx is installed by scripts/bootstrap.sh"
    config = write_config(read_settings({}, host="127.0.0.1", port=18999), tmp_path, 20001, 20002)
    result = subprocess.run(
        [executable, "-t", "-p", str(tmp_path), "-c", str(config), "-e", "stderr"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("limit", [6 * 1024 * 1024, 7_000_000, 1024, 1099, 6_999_999])
def test_the_body_limit_pattern_matches_exactly_the_lengths_over_the_limit(limit: int) -> None:
    pattern = re.compile(above_pattern(limit))
    rng = random.Random(limit)
    lengths = [0, 1, limit - 1, limit, limit + 1, 10 * limit, 10 ** len(str(limit)) - 1, 10 ** len(str(limit))]
    lengths += [rng.randrange(0, 3 * limit) for _ in range(5_000)]
    assert [n for n in lengths if bool(pattern.match(str(n))) != (n > limit)] == []
    assert pattern.match("000" + str(limit + 1)) and not pattern.match("000" + str(limit))


def test_the_request_limit_and_the_invoke_timeout_come_from_the_settings() -> None:
    settings = read_settings({"GENESIG_MAX_REQUEST_BYTES": "2000000", "GENESIG_INVOKE_TIMEOUT_S": "30"})
    text = render_config(settings, Path("/s"), 20001, 20002)
    assert f'"~{above_pattern(2_000_000)}" 1;' in text, "a longer body: our 413, before it is read"
    assert f"client_max_body_size {2_000_000 + 1024 * 1024};" in text, "nginx's own limit above ours"
    assert "over the 2000000-byte limit" in text and "proxy_read_timeout 35s;" in text
    default = render_config(read_settings({}), Path("/s"), 20001, 20002)
    assert f'"~{above_pattern(6 * 1024 * 1024)}" 1;' in default and "proxy_read_timeout 65s;" in default


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
    from genesig.container.nginx import answers
    from genesig.errors import render_error

    settings = read_settings({})
    text = render_config(settings, Path("/s"), 20001, 20002)
    body = render_error("model_not_found", "model $model_label is not loaded").decode()
    assert f"return 404 '{body}';" in text
    for answer in answers(settings).values():
        status, quoted = answer.split(" ", 1)
        assert json.loads(quoted.strip("'"))["error"] and f"return {answer};" in text
