"""Notebooks in the API and the proxy's refusals, without starting JupyterLab (the control
loop is not run: notebooks stay queued). tests/cli/test_notebooks_e2e.py runs one."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fabbrica.api.app import create_app
from fabbrica.api.deps import AppContext
from fabbrica.backends.local import LocalExecutor
from fabbrica.catalog.local import local_factory
from fabbrica.catalog.model import Catalog
from fabbrica.core.notebooks import WARN_S
from fabbrica.portal import install_portal
from fabbrica.services import identity, notebooks
from fabbrica.services.access.calls import seed_calls
from fabbrica.services.dispatch import Dispatcher
from fabbrica.services.notebooks import Ending
from fabbrica.store.db import Database
from fabbrica.store.models import Job
from fabbrica.store.types import utcnow
from tests.api.helpers import API, assert_error
from tests.api.test_jobs_api import World, spec, submit, tenant
from tests.conftest import ADMIN_TOKEN, bearer


@pytest.fixture
def world(db: Database, catalog: Catalog, tmp_path: Path) -> Iterator[World]:
    """The API and the portal (where the proxy is), a PI with a project on `local` and
    another tenant; nothing dispatched."""
    full = catalog.with_factory(local_factory(4))
    with db.session() as session:
        identity.bootstrap(session, now=utcnow(), token=ADMIN_TOKEN)
        seed_calls(session, full, utcnow())
    executors = {"local": LocalExecutor(tmp_path / "jobs", gpus=4)}
    ctx = AppContext(db=db, catalog=full, fixed_executors=executors, files=tmp_path)
    app = create_app(ctx)
    install_portal(app)
    with TestClient(app, raise_server_exceptions=True) as api:
        admin = bearer(ADMIN_TOKEN)
        pi, project, allocation = tenant(api, admin, "pi@startup.it", 10)
        other, _, _ = tenant(api, admin, "other@startup.it", 10)
        dispatcher = Dispatcher(db, full, ctx.executors, utcnow)
        yield World(api, db, dispatcher, admin, pi, project, allocation, other)


def test_a_notebook_is_a_job_of_its_member_only(world: World) -> None:
    started = world.api.post(
        f"{API}/notebooks", headers=world.pi, json={"project": world.project, "gpus": 2}
    )
    assert started.status_code == 201, started.text
    body = started.json()
    job_id = body["job"]
    assert body["url"] == f"/notebooks/{job_id}/lab" and body["state"] == "starting"
    assert body["gpus"] == 2 and body["time_limit_s"] == 4 * 3600
    job = world.api.get(f"{API}/jobs/{job_id}", headers=world.pi).json()
    assert job["name"] == "notebook" and job["state"] == "queued"  # placed like any job
    listed = world.api.get(f"{API}/notebooks", headers=world.pi).json()
    assert [n["job"] for n in listed] == [job_id]
    for someone in (world.other, world.admin):
        assert world.api.get(f"{API}/notebooks", headers=someone).json() == []
        gone = world.api.get(f"{API}/notebooks/{job_id}", headers=someone)
        assert_error(gone, 404, "not_found", "job_id")
        assert world.api.get(f"/notebooks/{job_id}/lab", headers=someone).status_code == 404
    # the proxy: its member waits while it starts; no credentials get 401 or sign-in
    waiting = world.api.get(f"/notebooks/{job_id}/lab", headers=world.pi)
    assert waiting.status_code == 503 and waiting.headers["retry-after"] == "2"
    assert world.api.get(f"/notebooks/{job_id}/api/status").status_code == 401
    page = world.api.get(
        f"/notebooks/{job_id}/lab", headers={"Accept": "text/html"}, follow_redirects=False
    )
    assert page.status_code == 303 and page.headers["location"].startswith("/sign-in?next=")
    cross = world.api.get(
        f"/notebooks/{job_id}/lab", headers={**world.pi, "Origin": "https://evil.example"}
    )
    assert cross.status_code == 403


def test_a_batch_job_named_notebook_is_not_one(world: World) -> None:
    job = submit(world, {**spec("sleep 1"), "name": "notebook"}).json()
    assert world.api.get(f"{API}/notebooks/{job['id']}", headers=world.pi).status_code == 404
    assert world.api.get(f"{API}/notebooks", headers=world.pi).json() == []


def test_bad_input_names_the_field_and_queues_nothing(world: World) -> None:
    for body, field in (
        ({"gpus": 0}, "gpus"),
        ({"hours": -1}, "hours"),
        ({"hours": 10_000}, "hours"),
        ({"factory": "nowhere"}, "factory"),
        ({"datasets": ["no such"]}, "datasets"),
    ):
        refused = world.api.post(
            f"{API}/notebooks", headers=world.pi, json={"project": world.project, **body}
        )
        assert refused.status_code == 422, (body, refused.text)
        assert refused.json()["error"]["field"].split(".")[0] in (field, "body"), refused.text
    assert world.api.get(f"{API}/jobs", headers=world.pi).json() == []


def test_a_notebook_ends_at_the_sooner_of_its_idle_end_and_its_time_limit(
    world: World, catalog: Catalog, tmp_path: Path
) -> None:
    """What the portal warns of: the launcher's status.json (read as untrusted) or the
    job's start plus its limit, `soon` within WARN_S."""
    full = catalog.with_factory(local_factory(4))
    local = LocalExecutor(tmp_path / "jobs", gpus=4)  # the world's executor's directory
    executors = AppContext(db=world.db, catalog=full, fixed_executors={"local": local}).executors
    started = world.api.post(f"{API}/notebooks", headers=world.pi, json={"project": world.project})
    job_id = started.json()["job"]
    now = utcnow()
    with world.db.session() as session:
        job = session.get(Job, job_id)
        assert job is not None and notebooks.ending(executors, job, now) is None  # queued
        job.factory_id, job.state, job.started_at = "local", "running", now
        status = tmp_path / "jobs" / f"fab-{job_id}" / "work" / ".notebook" / "status.json"
        status.parent.mkdir(parents=True)
        limit = now + dt.timedelta(hours=4)
        assert notebooks.ending(executors, job, now) == Ending(limit, "time_limit", False)
        idle = now + dt.timedelta(seconds=300)
        status.write_text(json.dumps({"idle_ends_at": idle.isoformat()}))
        assert notebooks.ending(executors, job, now) == Ending(idle, "idle", True)
        status.write_text(json.dumps({"idle_ends_at": None}))  # a client is connected
        assert notebooks.ending(executors, job, now) == Ending(limit, "time_limit", False)
        soon = limit - dt.timedelta(seconds=WARN_S)
        assert notebooks.ending(executors, job, soon) == Ending(limit, "time_limit", True)
        for bad in ("2026-13-01T00:00:00+00:00", "2026-12-01T00:00:00", "x" * 50, 7):
            status.write_text(json.dumps({"idle_ends_at": bad}))
            assert notebooks.ending(executors, job, now) == Ending(limit, "time_limit", False)
        status.unlink()
        status.symlink_to(tmp_path / "elsewhere.json")
        (tmp_path / "elsewhere.json").write_text(json.dumps({"idle_ends_at": idle.isoformat()}))
        assert notebooks.ending(executors, job, now) == Ending(limit, "time_limit", False)
        session.rollback()


def test_only_a_factorys_agent_opens_a_notebook_tunnel(world: World) -> None:
    """The tunnel's upgrade is refused without a token (401) and to anyone but a site
    agent (403); the agent of a factory gets it, and the factory counts as connected."""
    from starlette.testclient import WebSocketDenialResponse

    from fabbrica.core.tunnel import PATH

    for headers, status in (({}, 401), (world.pi, 403), (world.admin, 403)):
        with (
            pytest.raises(WebSocketDenialResponse) as refused,
            world.api.websocket_connect(PATH, headers=headers),
        ):
            pass
        assert refused.value.status_code == status, (headers, refused.value.text)
    made = world.api.post(f"{API}/agents/jaif/token", headers=world.admin, json={})
    assert made.status_code == 201, made.text
    hub = world.api.app.state.ctx.tunnels  # type: ignore[attr-defined]
    with world.api.websocket_connect(PATH, headers=bearer(made.json()["token"])) as ws:
        ws.send_text('{"op": "ready", "jobs": [5]}')
        ws.send_text('{"op": "ready", "jobs": [5, 6]}')  # in order: after the first
        deadline = dt.datetime.now() + dt.timedelta(seconds=10)
        while not hub.ready("jaif", 6):
            assert dt.datetime.now() < deadline, "the ready report never arrived"
            time.sleep(0.05)
        assert hub.connected("jaif") and not hub.ready("jaif", 7)
    assert not hub.connected("jaif")
