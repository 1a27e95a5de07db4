"""Tenant isolation on the embedded default, end to end: a real `fabbrica up`, two users in
two organisations, real jobs. As root each user's jobs run as a system user of their own
and cannot read each other's files, the database or the server's environment; not as
root, the local factory runs one user's jobs only."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cli.server import Server, clean_env, fabbrica, open_for_job_users
from tests.conftest import need_service

pytestmark = pytest.mark.slow


class Cli:
    def __init__(self, server: Server, token: str) -> None:
        self.server, self.token = server, token

    def run(self, *args: str, code: int = 0) -> Any:
        result = fabbrica(*args, env=self.server.client_env(self.token), timeout=120)
        assert result.returncode == code, (args, result.stdout, result.stderr)
        return json.loads(result.stdout) if "--json" in args and code == 0 else result


def member(admin: Cli, email: str, org: str) -> tuple[Cli, str]:
    """A user with an organisation of their own and a Playground allocation on `local`."""
    token = admin.run("user", "add", email, "--name", email, "--json")["token"]
    cli = Cli(admin.server, token)
    made = cli.run("org", "add", org, "--country", "IT", "--type", "startup", "--json")
    project = cli.run("project", "add", f"{org} P", "--org", str(made["id"]), "--json")["id"]
    accepted = cli.run("apply", "--project", project, "--call", "local-playground",
                       "--gpu-hours", "5", "--months", "1",
                       "--declare-civilian-ai-act", "--json")  # fmt: skip
    assert accepted["state"] == "accepted"
    return cli, project


def spec(folder: Path, name: str, command: str) -> str:
    path = folder / name / "job.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"name": name, "run": command}))  # JSON is YAML
    return str(path)


@pytest.fixture
def top(tmp_path: Path) -> Iterator[Path]:
    """A folder anyone may pass through: every refusal below is the isolation's, not that
    of a closed parent (pytest's own temporary folders are root's alone)."""
    if os.geteuid() != 0:
        need_service("these tests start fabbrica up as root (and as nobody)")
    folder = Path(tempfile.mkdtemp(prefix="fabbrica-e2e-", dir="/tmp"))
    open_for_job_users(folder / "data")
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_as_root_a_job_of_b_cannot_read_as_files_the_database_or_the_servers_env(
    top: Path, tmp_path: Path
) -> None:
    env = clean_env(FABBRICA_BOOTSTRAP_TOKEN="t", FABBRICA_LOOP_INTERVAL_SECONDS="0.2")
    server = Server(data_dir=top / "data", env=env, log=tmp_path / "up.log")
    server.start()
    try:
        admin = Cli(server, "t")
        alice, _ = member(admin, "a@one.it", "One")
        bob, _ = member(admin, "b@two.it", "Two")
        job_a = alice.run(
            "run",
            spec(top, "a", "echo a-secret > outputs/secret.txt && cat $FABBRICA_JOB_DIR/outputs/*"),
            "--wait",
            "--json",
        )
        assert job_a["state"] == "succeeded", job_a
        assert "a-secret" in alice.run("logs", str(job_a["id"])).stdout
        data = server.data_dir
        assert server.process is not None
        targets = [
            data / "jobs" / f"fab-{job_a['id']}",
            data / "jobs" / f"fab-{job_a['id']}" / "work" / "outputs" / "secret.txt",
            data,
            data / "jobs",
            data / "fabbrica.db",
            Path(f"/proc/{server.process.pid}/environ"),
        ]
        command = "; ".join(  # list a directory, read a file
            f"if {'ls' if t.is_dir() else 'cat'} {t} >/dev/null 2>err; then echo READ {t}; "
            f"else echo DENIED {t}: $(cat err); fi"
            for t in targets
        )
        own = "cat $FABBRICA_JOB_DIR/err >/dev/null && echo own-ok"
        job_b = bob.run("run", spec(top, "b", f"{command}; {own}"), "--wait", "--json")
        assert job_b["state"] == "succeeded", job_b
        log = bob.run("logs", str(job_b["id"])).stdout
        for target in targets:
            (line,) = [x for x in log.splitlines() if x.split(":")[0].endswith(f" {target}")]
            assert line.startswith(f"DENIED {target}") and "Permission denied" in line, log
        assert "a-secret" not in log and "own-ok" in log
        # A's outputs are whole, and still A's to download
        alice.run("download", str(job_a["id"]), "--to", str(tmp_path / "out"))
        assert (tmp_path / "out" / "outputs" / "secret.txt").read_text() == "a-secret\n"
        assert "local jobs: isolated" in server.output()
        assert stat.S_IMODE(data.stat().st_mode) == 0o711  # passable, never listable
        for child in data.iterdir():  # the database, uploads, agent files: root's alone
            mode = stat.S_IMODE(child.lstat().st_mode)
            assert mode == 0o711 if child.name in ("jobs", "emulated") else not mode & 0o077
    finally:
        server.stop()


def test_not_as_root_the_local_factory_runs_one_users_jobs(top: Path, tmp_path: Path) -> None:
    data = top / "data"
    data.mkdir()
    shutil.chown(data, "nobody")
    env = clean_env(FABBRICA_BOOTSTRAP_TOKEN="t", FABBRICA_LOOP_INTERVAL_SECONDS="0.2")
    server = Server(data_dir=data, env=env, log=tmp_path / "up.log", user="nobody")
    server.start()
    try:
        assert "local jobs: NOT isolated" in server.output()
        assert "it runs as nobody" in server.output()
        admin = Cli(server, "t")
        alice, _ = member(admin, "a@one.it", "One")  # the oldest live allocation on local
        bob, project_b = member(admin, "b@two.it", "Two")
        refused = bob.run("run", spec(top, "b", "true"), code=2)
        assert "local runs the jobs of one user only" in refused.stderr
        assert "a@one.it" in refused.stderr and "not as root" in refused.stderr
        answer = httpx.post(
            f"{server.url}/api/v1/jobs",
            json={"spec": {"name": "b2", "run": "true"}, "project": project_b},
            headers={"Authorization": f"Bearer {bob.token}"},
        )
        assert answer.status_code == 422
        assert answer.json()["error"]["field"] == "placement.factories"
        assert bob.run("jobs", "--json") == []  # nothing stored
        job_a = alice.run("run", spec(top, "a", "id -un"), "--wait", "--json")
        assert job_a["state"] == "succeeded"
        assert alice.run("logs", str(job_a["id"])).stdout.strip() == "nobody"
    finally:
        server.stop()
