"""Notebooks end to end: a real `fabbrica up` (SQLite), a real JupyterLab as a job on
`local`, reached only through Fabbrica's proxy with a portal session (HTTP and the kernel's
WebSocket): a cell computes 45 and writes a file, the notebook is stopped and charged for
the time it ran, the file is in its outputs. Another member's session gets 404, no
credentials 401 (or the sign-in page), and an untouched notebook ends by itself."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
import json
import re
import tarfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.cli import test_portal_browser
from tests.cli.server import Server, clean_env
from tests.cli.test_jobs_e2e import Cli, startup
from tests.cli.test_portal_browser import Inbox

pytestmark = pytest.mark.slow
inbox = test_portal_browser.inbox  # the real SMTP server the sign-in links arrive at
IDLE_S = 30
MLFLOW_CELL = """import mlflow
mlflow.set_experiment("notebook")
with mlflow.start_run() as run:
    mlflow.log_metric("answer", 45)
run.info.run_id"""


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("server")
    env = clean_env(FABBRICA_BOOTSTRAP_TOKEN="t", FABBRICA_NOTEBOOK_IDLE=str(IDLE_S))
    srv = Server(data_dir=home / "data", env=env, log=home / "up.log")
    yield srv
    srv.stop()


def signed_in(server: Server, mail: Inbox, email: str) -> httpx.Client:
    """A browser-like client holding a portal session of `email` (from the emailed link)."""
    web = httpx.Client(base_url=server.url, timeout=60)
    form = web.get("/sign-in").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form)
    assert csrf is not None, form
    web.post("/sign-in", data={"email": email, "csrf": csrf[1]}).raise_for_status()
    assert web.get(mail.link(email)).status_code == 303
    assert "fabbrica_session" in web.cookies
    return web


def execute(ws_url: str, cookie: str | dict[str, str], code: str) -> str:
    """Run `code` in the kernel over its WebSocket (Jupyter's JSON messages); its result.
    `cookie`: the portal session's cookie, or the request's headers."""
    headers = {"Cookie": cookie} if isinstance(cookie, str) else cookie

    async def run() -> str:
        async with connect(ws_url, additional_headers=headers, open_timeout=90) as ws:
            msg_id = uuid.uuid4().hex
            header = {"msg_id": msg_id, "msg_type": "execute_request", "username": "t",
                      "session": uuid.uuid4().hex, "version": "5.3", "date": ""}  # fmt: skip
            content = {"code": code, "silent": False, "store_history": True,
                       "user_expressions": {}, "allow_stdin": False}  # fmt: skip
            await ws.send(json.dumps({"header": header, "parent_header": {}, "metadata": {},
                                      "content": content, "channel": "shell"}))  # fmt: skip
            result = ""
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 60))
                if message["parent_header"].get("msg_id") != msg_id:
                    continue
                if message["msg_type"] == "execute_result":
                    result = message["content"]["data"]["text/plain"]
                if message["msg_type"] == "error":
                    raise AssertionError(message["content"])
                if (
                    message["msg_type"] == "status"
                    and message["content"]["execution_state"] == "idle"
                ):
                    return result

    return asyncio.run(run())


def ws_status(ws_url: str, headers: dict[str, str]) -> int:
    async def run() -> int:
        try:
            async with connect(ws_url, additional_headers=headers, open_timeout=90):
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    return asyncio.run(run())


def hours_between(job: dict[str, Any]) -> float:
    ran = dt.datetime.fromisoformat(job["ended_at"]) - dt.datetime.fromisoformat(job["started_at"])
    return ran.total_seconds() / 3600


def test_a_notebook_through_fabbrica_only(server: Server, inbox: tuple[Inbox, int]) -> None:
    with contextlib.ExitStack() as stack:
        through_fabbrica(server, inbox, stack)


def through_fabbrica(server: Server, inbox: tuple[Inbox, int], stack: contextlib.ExitStack) -> None:
    mail, port = inbox
    server.env.update(FABBRICA_SMTP_HOST="127.0.0.1", FABBRICA_SMTP_PORT=str(port))
    cli, project = startup(server)  # eng@startup.it, a Playground allocation on `local`
    Cli(server).run("user", "add", "other@startup.it", "--name", "Other", "--json")
    started = cli.run("notebook", "--project", project, "--gpus", "2", "--json")
    assert set(started) == {"job", "url", "state"} and started["state"] == "ready", started
    job_id = started["job"]
    assert started["url"] == f"{server.url}/notebooks/{job_id}/lab"
    untouched = cli.run("notebook", "--project", project, "--json")["job"]  # left alone

    web = signed_in(server, mail, "eng@startup.it")
    stack.callback(web.close)
    # the portal warns that the untouched one ends soon if it stays idle (30 s < 10 min)
    deadline = time.monotonic() + 20
    while f'id="ending-{untouched}"' not in (page := web.get("/notebooks").text):
        assert time.monotonic() < deadline, page
        time.sleep(0.5)
    assert "if it stays idle" in page
    lab = web.get(started["url"])
    assert lab.status_code == 200 and "JupyterLab" in lab.text
    base = f"/notebooks/{job_id}/"
    kernel = web.post(f"{base}api/kernels", json={"name": "python3"})
    assert kernel.status_code == 201, kernel.text
    cookie = f"fabbrica_session={web.cookies['fabbrica_session']}"
    ws_url = (
        f"ws://{server.url.removeprefix('http://')}{base}api/kernels/{kernel.json()['id']}/channels"
    )
    assert execute(ws_url, cookie, "sum(range(10))") == "45"
    execute(ws_url, cookie, "open('result.txt', 'w').write('45\\n')")
    # the project's MLflow tracking URI and a job token: the stock client logs a run
    uri = f"{server.url}/mlflow/{project}"
    assert execute(ws_url, cookie, "import os; os.environ['MLFLOW_TRACKING_URI']") == repr(uri)
    run_id = execute(ws_url, cookie, MLFLOW_CELL).strip("'")
    run = web.get(
        f"/mlflow/{project}/api/2.0/mlflow/runs/get",
        params={"run_id": run_id},
        headers={"Authorization": f"Bearer {cli.token}"},
    )
    assert run.status_code == 200, run.text
    metrics = {m["key"]: m["value"] for m in run.json()["run"]["data"]["metrics"]}
    assert metrics == {"answer": 45.0}
    # JupyterLab's token never reaches the member
    assert "token" not in json.dumps(dict(lab.headers)).lower()

    other = signed_in(server, mail, "other@startup.it")
    stack.callback(other.close)
    assert other.get(started["url"]).status_code == 404
    assert other.get(f"{base}api/kernels").status_code == 404
    other_cookie = f"fabbrica_session={other.cookies['fabbrica_session']}"
    assert ws_status(ws_url, {"Cookie": other_cookie}) == 404
    anonymous = httpx.get(f"{server.url}{base}api/kernels")
    assert anonymous.status_code == 401
    browser = httpx.get(f"{server.url}{base}lab", headers={"Accept": "text/html"})
    assert browser.status_code == 303 and browser.headers["location"].startswith("/sign-in")
    assert ws_status(ws_url, {}) == 401

    listed = {n["job"]: n for n in cli.run("notebook", "list", "--json")}
    assert listed[job_id]["state"] == "ready"
    stopped = cli.run("notebook", "stop", str(job_id), "--json")
    assert stopped["state"] == "cancelled"
    job = cli.run("job", str(job_id), "--json")
    assert job["gpu_hours"] == pytest.approx(2 * hours_between(job), rel=0.02, abs=2e-4)
    outputs = web.get(
        f"/api/v1/jobs/{job_id}/outputs", headers={"Authorization": f"Bearer {cli.token}"}
    )
    with tarfile.open(fileobj=io.BytesIO(outputs.content)) as tar:
        names = tar.getnames()
        member = next(n for n in names if n.endswith("result.txt"))
        extracted = tar.extractfile(member)
        assert extracted is not None and extracted.read() == b"45\n"
    assert not any("notebook.json" in n for n in names)
    assert web.get(started["url"]).status_code == 404  # ended

    # untouched since it was ready: it ends by itself within 60 s, and its charge there
    ready_at = time.monotonic()
    while cli.run("job", str(untouched), "--json")["state"] not in ("succeeded", "cancelled"):
        assert time.monotonic() - ready_at < 60 + IDLE_S, "the idle notebook still runs"
        time.sleep(1)
    idle = cli.run("job", str(untouched), "--json")
    assert idle["state"] == "succeeded"
    assert hours_between(idle) * 3600 < 60 + IDLE_S
    assert idle["gpu_hours"] == pytest.approx(hours_between(idle), rel=0.02, abs=2e-4)
