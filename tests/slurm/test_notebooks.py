"""A notebook on the Slurm testbed through it4lia's site agent. The central server runs in a
network namespace of its own: it reaches the sites' side only through what the sites open
to it, and the agent opens its notebook tunnel outward to it. JupyterLab runs as the
member's site user in a Slurm job and is reached through Fabbrica's URL only: a cell
computes 45 and writes a file, over the kernel's WebSocket and in JupyterLab's own page in
Chromium. No new port of the sites' side becomes reachable from the server's namespace.
Killing the agent leaves the notebook running while the proxy answers "reconnecting";
after the agent restarts, the same kernel answers. Stopped, the job is charged GPUs x the
time it ran, what sacct shows."""

from __future__ import annotations

import json
import pwd
from collections.abc import Iterator

import httpx
import pytest

from tests.browser import browser_page
from tests.cli.test_notebooks_browser import run_cell
from tests.cli.test_notebooks_e2e import execute, hours_between, ws_status
from tests.slurm.agents import SITE_USER
from tests.slurm.conftest import poll
from tests.slurm.netns import (
    Namespace,
    listening_ports,
    listening_sockets_of,
    server_namespace,
)
from tests.slurm.test_agents import Make, billed_seconds, federation, settled

__all__ = ["federation"]  # test_agents.py's fixture: one federation per test

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
FACTORY = "it4lia"  # the first cluster: on every testbed


@pytest.fixture
def namespace() -> Iterator[Namespace]:
    with server_namespace() as ns:
        yield ns


def test_a_notebook_at_a_slurm_site_through_the_agents_tunnel(
    federation: Make, namespace: Namespace
) -> None:
    fed = federation(
        factories=[FACTORY],
        lease_s=120.0,  # the notebook outlives the agent's restart
        server_host=namespace.inside,
        server_prefix=namespace.prefix,
    )
    site_uid = pwd.getpwnam(SITE_USER).pw_uid
    before = namespace.reachable_ports()
    started = fed.cli_json("notebook", "--factory", FACTORY, "--hours", "0.5")
    assert started["state"] == "ready", started
    job_id = started["job"]
    assert fed.job(job_id)["factory"] == FACTORY

    # what the notebook and the agent listen on, and what the server's side can reach
    notebook_ports = listening_ports(site_uid)
    assert notebook_ports, "JupyterLab listens somewhere at the site"
    agent = fed.sites[FACTORY].process
    assert agent is not None and listening_sockets_of(agent.pid) == set()
    after = namespace.reachable_ports()
    assert after - before == set(), f"new ports reachable from the server: {after - before}"
    for port in notebook_ports:
        for host in (namespace.outside, "127.0.0.1"):
            assert not namespace.connects(host, port), (host, port)

    assert fed.server is not None
    url, base = fed.server.url, f"/notebooks/{job_id}/"
    auth = {"Authorization": f"Bearer {fed.user_token}"}
    me = httpx.Client(base_url=url, headers=auth, timeout=60)
    lab = me.get(f"{base}lab", headers={"Accept": "text/html"})
    assert lab.status_code == 200 and "JupyterLab" in lab.text
    kernel = me.post(f"{base}api/kernels", json={"name": "python3"})
    assert kernel.status_code == 201, kernel.text
    ws_url = f"ws://{url.removeprefix('http://')}{base}api/kernels/{kernel.json()['id']}/channels"
    assert execute(ws_url, auth, "x = sum(range(10)); x") == "45"
    assert execute(ws_url, auth, "import getpass; getpass.getuser()") == repr(SITE_USER)
    execute(ws_url, auth, "open('result.txt', 'w').write('45\\n')")
    with browser_page() as browsed:  # JupyterLab's own interface, in Chromium
        browsed.page.set_extra_http_headers(auth)
        browsed.page.goto(f"{url}{base}lab")
        run_cell(browsed.page)
    assert ws_status(ws_url, {}) == 401
    assert httpx.get(f"{url}{base}api/kernels").status_code == 401

    fed.kill_agent(FACTORY)
    answer = poll("the proxy to say the agent is away", lambda: _away(me, base), 30)
    assert answer["code"] == "reconnecting" and "keeps running" in answer["detail"]
    assert fed.job(job_id)["state"] == "running"
    fed.start_agent(FACTORY)
    poll("the tunnel back", lambda: me.get(f"{base}api/status").status_code == 200 or None, 60)
    assert execute(ws_url, auth, "x") == "45"  # the same kernel: it kept running

    site = fed.sites[FACTORY]
    kept = site.work_dir / "runs" / f"fab-{job_id}" / "work" / "outputs" / "result.txt"
    assert kept.read_text() == "45\n"
    stopped = fed.cli_json("notebook", "stop", str(job_id))
    assert stopped["state"] == "cancelled"
    job = fed.wait_job(job_id, lambda j: j["gpu_hours"] is not None, "its charge")
    (run,) = settled(fed, FACTORY, job_id)
    assert run.user == SITE_USER and run.gpus == 1
    assert job["gpu_hours"] == pytest.approx(billed_seconds(fed, FACTORY, 1, run.elapsed_s) / 3600)
    assert job["gpu_hours"] == pytest.approx(hours_between(job), abs=3 / 3600)
    me.close()


def _away(me: httpx.Client, base: str) -> dict[str, str] | None:
    answer = me.get(f"{base}api/status")
    if answer.status_code != 503:
        return None
    body: dict[str, str] = json.loads(answer.text)
    return body
