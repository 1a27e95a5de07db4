"""The quick `fabbrica run` prints a job without Rich when it can tell what Rich would write
(fabbrica.cli.quick_output): on a terminal and into a pipe, in the environments that change
Rich's mind (TERM, NO_COLOR, FORCE_COLOR, TTY_COMPATIBLE...), its bytes are the full
path's (`fabbrica.cli.job_cmds._after_submit`, with Rich)."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys

import pytest

from tests.cli.server import clean_env

SHOW = """
import json, sys
job = json.loads(sys.argv[2])
if sys.argv[1] == "quick":
    from fabbrica.cli.quick_output import show
    show(job, False)
else:
    from fabbrica.cli.job_cmds import _after_submit
    _after_submit(job, wait=False, follow=False, json_out=False)
"""
JOB = {
    "id": 7,
    "name": "ünïcode-名前",
    "state": "queued",
    "reason": "",
    "factory": None,
    "gpus": 2,
    "gpu_hours": 0.0016,
    "reserved_gpu_hours": 12.5,
    "submitted_at": "2026-12-01T07:41:00Z",
    "cancel_requested": False,
    "array_id": None,
    "run": 1,
}
ENVIRONMENTS = [
    {},
    {"TERM": "dumb"},
    {"TERM": "unknown"},
    {"TERM": ""},
    {"NO_COLOR": "1"},
    {"COLORTERM": "truecolor"},
    {"TTY_COMPATIBLE": "0"},
    {"TTY_INTERACTIVE": "0"},
    {"FORCE_COLOR": ""},
]


def on_a_terminal(path: str, job: dict[str, object], env: dict[str, str]) -> bytes:
    """Everything the process writes to its terminal (stdout and stderr)."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-c", SHOW, path, json.dumps(job)],
        stdin=follower, stdout=follower, stderr=follower, env=env,
    )  # fmt: skip
    os.close(follower)
    written = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the process has closed its end
            break
        if not chunk:
            break
        written += chunk
    os.close(leader)
    assert process.wait(60) == 0, written
    return written


def into_a_pipe(path: str, job: dict[str, object], env: dict[str, str]) -> tuple[str, str]:
    done = subprocess.run(
        [sys.executable, "-c", SHOW, path, json.dumps(job)],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return done.stdout, done.stderr


@pytest.mark.parametrize("extra", ENVIRONMENTS)
def test_on_a_terminal_the_bytes_are_richs(extra: dict[str, str]) -> None:
    env = clean_env(TERM="xterm-256color") | extra
    quick = on_a_terminal("quick", JOB, env)
    assert quick == on_a_terminal("full", JOB, env)
    assert b"queued" in quick


@pytest.mark.parametrize("extra", [{}, {"FORCE_COLOR": "1"}, {"TTY_COMPATIBLE": "1"}])
def test_into_a_pipe_the_text_is_richs(extra: dict[str, str]) -> None:
    env = clean_env() | extra
    array = JOB | {"array_id": 3, "name": "tab\there"}  # a line on stderr; Rich expands tabs
    for job in (JOB, array):
        quick = into_a_pipe("quick", job, env)
        assert quick == into_a_pipe("full", job, env)
    assert "first task of array 3" in quick[1]
