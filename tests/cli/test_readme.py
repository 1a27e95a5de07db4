"""The README's quickstart, run as written: every bash block of its Quickstart section, in a
fresh directory, against a real `fabbrica up`, so the README cannot drift from the code."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.server import Server, clean_env
from tests.conftest import REPO

pytestmark = pytest.mark.slow

README = REPO / "README.md"
# What the quickstart's first block does (install, start the server, run the tests), the
# test does itself: it starts the server and is one of the tests.
SERVER_BLOCK = ("./scripts/up", "./scripts/test")
PRINTED_URL = "http://127.0.0.1:8000"
PRINTED_TOKEN = "<the printed token>"
ADMIN_TOKEN = "readme-admin-token"


def bash_blocks(markdown: str, section: str) -> list[str]:
    """The ```bash blocks under the `## section` heading, up to the next `## ` heading."""
    start = markdown.index(f"\n## {section}\n")
    end = markdown.find("\n## ", start + 1)
    body = markdown[start : end if end != -1 else None]
    return re.findall(r"^```bash\n(.*?)^```$", body, flags=re.DOTALL | re.MULTILINE)


def quickstart_script(url: str, token: str) -> str:
    """The quickstart's blocks after the server block, with the server's URL and token in
    place of what `fabbrica up` prints."""
    first, *rest = bash_blocks(README.read_text(encoding="utf-8"), "Quickstart")
    assert all(command in first for command in SERVER_BLOCK), first
    assert rest, "the quickstart has no commands after starting the server"
    script = "\n".join(rest)
    assert PRINTED_URL in script and PRINTED_TOKEN in script, script
    return script.replace(PRINTED_URL, url).replace(PRINTED_TOKEN, token)


def test_bash_blocks_are_found_under_their_heading() -> None:
    text = "# T\n\n## A\n\n```bash\na 1\n```\n\n```python\nno\n```\n\n## B\n```bash\nb\n```\n"
    assert bash_blocks(text, "A") == ["a 1\n"]
    assert bash_blocks(text, "B") == ["b\n"]


def test_the_readme_quickstart_runs_as_written(tmp_path: Path) -> None:
    server = Server(
        data_dir=tmp_path / "server",
        env=clean_env(FABBRICA_BOOTSTRAP_TOKEN=ADMIN_TOKEN),
        log=tmp_path / "up.log",
    ).start()
    try:
        # A fresh clone's layout: .venv/bin/fabbrica (this interpreter's) and examples/.
        here = tmp_path / "clone"
        (here / ".venv" / "bin").mkdir(parents=True)
        cli = here / ".venv" / "bin" / "fabbrica"
        cli.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m fabbrica "$@"\n')
        cli.chmod(0o755)
        (here / "examples").symlink_to(REPO / "examples")
        script = here / "quickstart.sh"
        script.write_text("set -euxo pipefail\n" + quickstart_script(server.url, ADMIN_TOKEN))
        done = subprocess.run(
            ["bash", str(script)],
            cwd=here,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    finally:
        server.stop()
    said = f"stdout:\n{done.stdout}\nstderr (the last command is the one that failed):\n"
    assert done.returncode == 0, said + done.stderr[-3000:]
    # `echo "$PROJECT"`: the id captured from `project add --json`, of this month
    assert re.search(r"^FAB-AIF-\d{4}PG\d{2}-\d{4}$", done.stdout, re.MULTILINE), said
    accuracy = re.search(r"test accuracy: ([0-9.]+)", done.stdout)
    assert accuracy is not None and float(accuracy.group(1)) > 0.9, said
    assert (here / "digits" / "outputs" / "model.pkl").stat().st_size > 1000
