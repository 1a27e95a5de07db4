"""A job array from the CLI against a real `fabbrica up`: one spec, one upload, every task
run with its index; `--follow` refused before anything is sent; the whole array cancelled."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.server import Server
from tests.cli.test_jobs_e2e import startup

pytestmark = pytest.mark.slow

SPEC = """\
name: sweep
workdir: .
run: python3 train.py
resources: {gpus: 1, time_limit: 5m}
array: 0-3
"""


@pytest.mark.parametrize("server_env", ["sqlite"], indirect=True)
def test_an_array_from_the_cli(server: Server, tmp_path: Path) -> None:
    cli, _ = startup(server)
    (tmp_path / "train.py").write_text(
        "import os\nprint('learning rate', 10 ** -int(os.environ['FABBRICA_ARRAY_INDEX']))\n"
    )
    (tmp_path / "job.yaml").write_text(SPEC)
    refused = cli.run("run", str(tmp_path / "job.yaml"), "--follow", code=2)
    assert "fabbrica logs ID --follow" in refused.stderr
    assert cli.run("jobs", "--json") == []  # nothing was sent
    tasks = cli.run("run", str(tmp_path / "job.yaml"), "--wait", "--json")
    assert [t["array_index"] for t in tasks] == [0, 1, 2, 3]
    assert {t["state"] for t in tasks} == {"succeeded"}
    assert {t["array_id"] for t in tasks} == {tasks[0]["id"]}
    for task in tasks:
        log = cli.run("logs", str(task["id"])).stdout
        assert log.strip() == f"learning rate {10 ** -task['array_index']}"
    table = cli.run("jobs", "--array", str(tasks[0]["id"])).stdout
    assert "sweep[3]" in table

    (tmp_path / "job.yaml").write_text(SPEC.replace("python3 train.py", "sleep 60"))
    first = cli.run("run", str(tmp_path / "job.yaml"), "--json")
    assert first["array_index"] == 0
    done = cli.run("cancel", str(first["id"]), "--array", "--json")
    assert done["array_id"] == first["id"] and done["cancelled"] + done["stopping"] == 4
    listed = cli.run("jobs", "--array", str(first["id"]), "--json")
    assert len(listed) == 4
