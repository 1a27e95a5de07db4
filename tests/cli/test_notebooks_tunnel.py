"""A notebook at a factory run by a site agent (a real `fabbrica agent` process, local
backend, over HTTP): its traffic goes through the notebook tunnel the agent opened, never
through a connection the server opens. A cell computes 45 through Fabbrica's URL; another
member gets 404; killing the agent leaves the notebook running while the proxy answers a
clear "reconnecting" error, and once the agent is back the same kernel answers again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.cli.server import Server, clean_env, open_for_job_users
from tests.cli.test_jobs_e2e import Cli
from tests.cli.test_notebooks_e2e import execute, hours_between, ws_status

pytestmark = pytest.mark.slow
FACTORY = "jaif"


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("tunnel")
    python_bin = str(Path(sys.executable).parent)  # the job's `python` has JupyterLab
    env = clean_env(
        FABBRICA_BOOTSTRAP_TOKEN="t",
        FABBRICA_LOCAL_GPUS="0",
        FABBRICA_LOOP_INTERVAL_SECONDS="0.2",
        FABBRICA_AGENT_LEASE_SECONDS="120",  # the notebook outlives the agent's restart
        PATH=f"{python_bin}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    srv = Server(data_dir=home / "data", env=env, log=home / "up.log")
    yield srv.start()
    srv.stop()


class Agent:
    """`fabbrica agent --backend local` for FACTORY, as a process of its own."""

    def __init__(self, server: Server, token: str) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="fabbrica-tunnel-agent-"))
        self.work.chmod(0o755)  # as root, its jobs run as users of their own
        open_for_job_users(self.work)
        self.log = self.work.parent / f"{self.work.name}.log"
        self.env = clean_env(FABBRICA_URL=server.url, FABBRICA_TOKEN=token) | {
            "PATH": server.env["PATH"]
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [sys.executable, "-m", "fabbrica", "agent", "--factory", FACTORY,
                "--backend", "local", "--gpus", "2", "--interval", "0.5",
                "--work-dir", str(self.work)]  # fmt: skip
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def kill(self) -> None:
        """kill -9 the agent alone (its jobs, in sessions of their own, keep running)."""
        assert self.process is not None and self.process.poll() is None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()


def until(what: str, probe: object, timeout: float) -> None:
    assert callable(probe)
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def test_a_notebook_at_an_agents_factory_goes_through_its_tunnel(server: Server) -> None:
    admin = Cli(server)
    agent_token = admin.run("agent", "token", "--factory", FACTORY, "--json")["token"]
    user = admin.run("user", "add", "eng@startup.it", "--name", "Eng", "--json")["token"]
    other = admin.run("user", "add", "other@startup.it", "--name", "Other", "--json")["token"]
    cli = Cli(server, user)
    org = cli.run("org", "add", "S", "--country", "IT", "--type", "startup", "--json")
    project = cli.run("project", "add", "P", "--org", str(org["id"]), "--json")["id"]
    call = f"{FACTORY}-playground"
    cli.run("apply", "--project", project, "--call", call, "--gpu-hours", "50",
            "--months", "1", "--declare-civilian-ai-act", "--json")  # fmt: skip
    agent = Agent(server, agent_token)
    agent.start()
    try:
        tunnel_round_trip(server, cli, agent, project, other)
    finally:
        agent.stop()
    said = agent.log.read_text(errors="replace")
    assert "Traceback" not in said, said


def tunnel_round_trip(server: Server, cli: Cli, agent: Agent, project: str, other: str) -> None:
    started = cli.run("notebook", "--project", project, "--factory", FACTORY, "--json")
    assert started["state"] == "ready", started
    job_id = started["job"]
    base = f"/notebooks/{job_id}/"
    me = httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {cli.token}"}, timeout=60
    )
    lab = me.get(started["url"], headers={"Accept": "text/html"})
    assert lab.status_code == 200 and "JupyterLab" in lab.text
    assert "token" not in str(dict(lab.headers)).lower()
    kernel = me.post(f"{base}api/kernels", json={"name": "python3"})
    assert kernel.status_code == 201, kernel.text
    ws_url = (
        f"ws://{server.url.removeprefix('http://')}{base}api/kernels/{kernel.json()['id']}/channels"
    )
    auth = {"Authorization": f"Bearer {cli.token}"}
    assert execute(ws_url, auth, "x = sum(range(10)); x") == "45"
    execute(ws_url, auth, "open('result.txt', 'w').write('45\\n')")
    # where it runs, it listens on the node's loopback: only the agent reaches it
    where = execute(
        ws_url, auth, "import json; json.load(open('../.notebook/notebook.json'))['host']"
    )
    assert where == "'127.0.0.1'"

    stranger = {"Authorization": f"Bearer {other}"}
    assert httpx.get(f"{server.url}{base}api/kernels", headers=stranger).status_code == 404
    assert ws_status(ws_url, stranger) == 404
    assert httpx.get(f"{server.url}{base}api/kernels").status_code == 401

    listed = {n["job"]: n for n in cli.run("notebook", "list", "--json")}
    assert listed[job_id]["state"] == "ready" and listed[job_id]["factory"] == FACTORY
    assert listed[job_id]["ends_because"] == "time_limit" and listed[job_id]["ends_at"]

    agent.kill()
    gone = {}

    def reconnecting() -> bool:
        answer = me.get(f"{base}api/status")
        gone["answer"] = answer
        return answer.status_code == 503

    until("the proxy to say the agent is away", reconnecting, 30)
    answer = gone["answer"]
    assert answer.json()["code"] == "reconnecting", answer.text
    assert "keeps running" in answer.json()["detail"] and answer.headers["retry-after"]
    page = me.get(f"{base}lab", headers={"Accept": "text/html"})
    assert page.status_code == 503 and "Reconnecting" in page.text
    assert ws_status(ws_url, auth) == 503
    assert cli.run("job", str(job_id), "--json")["state"] == "running"
    listed = {n["job"]: n for n in cli.run("notebook", "list", "--json")}
    assert listed[job_id]["state"] == "reconnecting"

    agent.start()
    until("the tunnel back", lambda: me.get(f"{base}api/status").status_code == 200, 60)
    assert execute(ws_url, auth, "x") == "45"  # the same kernel: it kept running

    # what it wrote is kept in the job's folder at the site (its outputs/)
    kept = agent.work / "jobs" / f"fab-{job_id}" / "work" / "outputs" / "result.txt"
    assert kept.read_text() == "45\n"
    stopped = cli.run("notebook", "stop", str(job_id), "--json")
    assert stopped["state"] == "cancelled"
    job = cli.run("job", str(job_id), "--json")
    assert job["gpu_hours"] == pytest.approx(hours_between(job), rel=0.02, abs=2e-4)
    until("the notebook to be gone", lambda: me.get(f"{base}api/status").status_code == 404, 30)
    me.close()
