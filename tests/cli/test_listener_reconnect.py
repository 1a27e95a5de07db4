"""A `fabbrica serve` replica's listener (store.signals) loses its PostgreSQL connection:
the offers notified while it was away are lost, so when it listens again it wakes every
agent sync it holds, and each checks the database again (issue 17)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from fabbrica.api.deps import AppContext
from fabbrica.catalog.loader import load_catalog
from fabbrica.services.dispatch import Dispatcher
from fabbrica.store.db import Database, normalise_url
from tests.cli.test_control_plane import Plane, pg_url, plane_env, wait_for

pytestmark = pytest.mark.slow
__all__ = ["pg_url"]  # the fixture, used here
FACTORY = "jaif"
HELD = 600  # seconds a sync may be held: far longer than the test waits for it
CAPACITY = {"partition": "booster", "gpu_model": "gh200", "total_gpus": 4, "free_gpus": 4}


@pytest.fixture
def replica_plane(tmp_path_factory: pytest.TempPathFactory, pg_url: str) -> Iterator[Plane]:
    home = tmp_path_factory.mktemp("listen")
    (home / "data").mkdir()
    env = plane_env(pg_url) | {
        "FABBRICA_LOCAL_GPUS": "0",
        "FABBRICA_AGENT_LEASE_SECONDS": "86400",  # the lease does not cap the wait below
        "FABBRICA_AGENT_WAIT_SECONDS": str(HELD),
    }
    deployment = Plane(env, home)
    yield deployment
    deployment.stop()


def ok(response: httpx.Response) -> Any:
    assert response.status_code < 300, response.text
    return response.json()


def listener_pids(url: str) -> list[int]:
    """The backends of the listeners on this database (their last statement: LISTEN)."""
    engine = create_engine(normalise_url(url))
    with engine.connect() as conn:
        found = conn.execute(
            text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND query LIKE 'LISTEN %'"
            )
        ).scalars()
        pids = list(found)
    engine.dispose()
    return pids


def last_seen(admin: httpx.Client) -> str | None:
    rows = ok(admin.get("/agents"))
    return next((r["last_seen_at"] for r in rows if r["factory"] == FACTORY), None)


def test_a_held_sync_whose_offer_was_lost_is_woken_when_the_listener_reconnects(
    replica_plane: Plane, pg_url: str
) -> None:
    plane = replica_plane
    replica = plane.serve()  # no controller: the job is placed below, and nobody notifies
    plane.ready(replica)
    api = f"{replica.url}/api/v1"
    admin = httpx.Client(base_url=api, headers={"Authorization": "Bearer t"})
    token = ok(admin.post(f"/agents/{FACTORY}/token", json={}))["token"]
    user = ok(admin.post("/users", json={"email": "eng@startup.it", "name": "Eng"}))["token"]
    me = httpx.Client(base_url=api, headers={"Authorization": f"Bearer {user}"})
    org = ok(me.post("/organisations", json={"name": "S", "country": "IT", "type": "startup"}))
    project = ok(me.post("/projects", json={"title": "P", "org_id": org["id"]}))["id"]
    applied = ok(me.post("/proposals", json={
        "project_id": project, "call_id": f"{FACTORY}-playground", "gpu_hours": 50,
        "months": 1, "declare_civilian_ai_act": True}))  # fmt: skip
    assert applied["state"] == "accepted", applied
    agent = httpx.Client(base_url=api, headers={"Authorization": f"Bearer {token}"}, timeout=None)
    body: dict[str, Any] = {"backend": "memory", "capacity": [CAPACITY], "runs": []}
    ok(agent.post("/agent/sync", json=body))  # capacity reported: the factory is placeable
    wait_for(lambda: len(listener_pids(pg_url)) == 1, 30, "the replica listens")
    seen = last_seen(admin)

    answers: list[Any] = []

    def hold() -> None:  # the answer, or what went wrong (a replica stopped at the end)
        try:
            answers.append(agent.post("/agent/sync", json=body | {"wait_s": HELD}).json())
        except (httpx.HTTPError, ValueError) as exc:
            answers.append(exc)

    held = threading.Thread(target=hold, daemon=True)
    held.start()
    # its check is done (nothing to launch): from now on it waits at the replica
    wait_for(lambda: last_seen(admin) != seen, 30, "the held sync checked the database")
    spec = {"name": "w", "run": "sleep 30", "resources": {"gpus": 1, "time_limit": "5m"}}
    job = ok(me.post("/jobs", json={"spec": spec, "project": project}))
    # The job is placed on the factory as a controller in another process places it; its
    # notification (store.signals.OFFER) is lost: none is sent here. The replica does not
    # know; its sync waits on (for HELD seconds).
    db = Database(pg_url)
    ctx = AppContext(db=db, catalog=load_catalog())
    try:
        Dispatcher(db, ctx.catalog, ctx.executors, ctx.clock).step()
    finally:
        db.dispose()
    assert ok(me.get(f"/jobs/{job['id']}"))["state"] == "dispatched"
    held.join(1)
    assert answers == []  # still held: nothing woke it
    (pid,) = listener_pids(pg_url)
    engine = create_engine(normalise_url(pg_url))
    with engine.connect() as conn:  # as a database restart or a network cut would
        assert conn.execute(text("SELECT pg_terminate_backend(:pid, 10000)"), {"pid": pid})
    engine.dispose()
    # The listener reconnects and wakes the held sync, which finds the job: an answer long
    # before its HELD seconds (without the wake it would come only then).
    held.join(HELD / 5)
    try:
        assert not held.is_alive(), "the held sync was not woken by the reconnection"
        (answer,) = answers
        assert [r["run_tag"] for r in answer["launch"]] == [f"fab-{job['id']}"]
        assert listener_pids(pg_url) not in ([], [pid])  # it listens again, anew
    finally:
        admin.close()
        me.close()
        agent.close()
