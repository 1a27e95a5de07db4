"""The agent loop against the real API (in process, both databases), with the project's
in-memory backend standing in for a site's scheduler."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from fabbrica.agent.client import AgentClient
from fabbrica.agent.loop import Agent
from fabbrica.api.app import create_app
from fabbrica.api.deps import AppContext
from fabbrica.backends.memory import FakePartition, InMemoryExecutor
from fabbrica.catalog.model import Catalog
from fabbrica.core.agent_api import ApiUnavailable
from fabbrica.core.executor import RunState
from fabbrica.services import identity
from fabbrica.services.access.calls import seed_calls
from fabbrica.services.dispatch import Dispatcher
from fabbrica.store.db import Database
from fabbrica.store.models import UsageRecord
from tests.api.helpers import API, Headers
from tests.conftest import ADMIN_TOKEN, Clock, bearer


@dataclass
class Site:
    api: TestClient
    db: Database
    clock: Clock
    dispatcher: Dispatcher
    user: Headers
    executor: InMemoryExecutor
    client: AgentClient

    def agent(self) -> Agent:
        return Agent(self.client, self.executor, backend="memory", interval=0.01)

    def submit(self) -> int:
        spec = {"name": "t", "run": "train", "resources": {"gpus": 2, "gpu_model": "gh200",
                                                          "time_limit": "1h"}}  # fmt: skip
        r = self.api.post(f"{API}/jobs", headers=self.user, json={"spec": spec})
        assert r.status_code == 201, r.text
        return int(r.json()["id"])

    def job(self, job_id: int) -> Any:
        return self.api.get(f"{API}/jobs/{job_id}", headers=self.user).json()


@pytest.fixture
def site(db: Database, catalog: Catalog, clock: Clock, tmp_path: Path) -> Iterator[Site]:
    with db.session() as session:
        identity.bootstrap(session, now=clock(), token=ADMIN_TOKEN)
        seed_calls(session, catalog, clock())
    ctx = AppContext(db=db, catalog=catalog, clock=clock, files=tmp_path)
    with TestClient(create_app(ctx)) as api:
        admin = bearer(ADMIN_TOKEN)
        made = api.post(f"{API}/users", headers=admin, json={"email": "ada@x.it", "name": "A"})
        user = bearer(made.json()["token"])
        org = api.post(f"{API}/organisations", headers=user,
                       json={"name": "O", "country": "DE", "type": "startup"}).json()  # fmt: skip
        pid = api.post(f"{API}/projects", headers=user,
                       json={"title": "T", "org_id": org["id"]}).json()["id"]  # fmt: skip
        applied = api.post(f"{API}/proposals", headers=user, json={
            "project_id": pid, "call_id": "jaif-playground", "gpu_hours": 50, "months": 1,
            "declare_civilian_ai_act": True})  # fmt: skip
        assert applied.json()["state"] == "accepted", applied.text
        token = api.post(f"{API}/agents/jaif/token", headers=admin).json()["token"]
        executor = InMemoryExecutor([FakePartition("booster", "gh200", 4)], now=clock())
        # starlette's TestClient is an httpx2 client: the same interface as httpx's
        client = AgentClient("http://testserver", token, http=cast("httpx.Client", api))
        dispatcher = Dispatcher(db, catalog, ctx.executors, clock)
        yield Site(api, db, clock, dispatcher, user, executor, client)


def test_a_job_runs_through_the_agent_and_is_charged_what_the_site_measured(site: Site) -> None:
    agent = site.agent()
    assert agent.round().ok  # capacity first: the factory is placeable only once it reports
    job_id = site.submit()
    site.dispatcher.step()
    assert site.job(job_id)["state"] == "dispatched"
    result = agent.round()
    assert result.launched == [f"fab-{job_id}"]
    agent.round()
    assert site.job(job_id)["state"] == "running"
    site.executor.advance(dt.timedelta(seconds=90))
    site.executor.finish(f"fab-{job_id}")
    agent.round()
    job = site.job(job_id)
    assert job["state"] == "succeeded"
    assert job["gpu_hours"] == pytest.approx(2 * 90 / 3600)
    assert agent.held == {}  # reported and forgotten


def test_the_api_away_the_runs_go_on_and_are_reported_when_it_returns(site: Site) -> None:
    agent = site.agent()
    agent.round()
    job_id = site.submit()
    site.dispatcher.step()
    agent.round()
    real = site.client.http

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("the API is away", request=request)

    away = httpx.Client(transport=httpx.MockTransport(refuse), base_url=str(real.base_url))
    site.client.http = away
    with pytest.raises(ApiUnavailable):
        site.client.sync("memory", [], [], [])
    assert not agent.round().ok
    site.executor.advance(dt.timedelta(seconds=30))
    site.executor.finish(f"fab-{job_id}")  # ended while the API was away
    assert not agent.round().ok
    assert f"fab-{job_id}" in agent.held
    site.client.http = real
    assert agent.round().ok
    assert site.job(job_id)["state"] == "succeeded"
    assert site.job(job_id)["gpu_hours"] == pytest.approx(2 * 30 / 3600)


def test_a_restarted_agent_adopts_its_runs_and_nothing_runs_twice(site: Site) -> None:
    first = site.agent()
    first.round()
    job_id = site.submit()
    site.dispatcher.step()
    first.round()
    assert len(site.executor.adopt()) == 1
    # the agent process dies; a new one starts with an empty memory
    second = site.agent()
    assert second.adopt() == 1
    result = second.round()
    assert result.launched == []  # it holds the run already: not offered again
    assert len(site.executor.adopt()) == 1
    site.executor.finish(f"fab-{job_id}")
    second.round()
    second.round()
    assert site.job(job_id)["state"] == "succeeded"
    with site.db.session() as s:
        assert s.scalar(select(func.count()).select_from(UsageRecord)) == 1


def test_a_job_the_backend_refuses_fails_and_is_not_charged(site: Site) -> None:
    agent = site.agent()
    agent.round()
    job_id = site.submit()
    site.dispatcher.step()

    def broken(request: Any) -> Any:
        raise RuntimeError("sbatch: error: Batch job submission failed")

    site.executor.submit = broken  # type: ignore[method-assign]
    agent.round()
    assert agent.held[f"fab-{job_id}"].status.state is RunState.FAILED
    agent.round()
    job = site.job(job_id)
    assert job["state"] == "failed" and "could not start" in job["reason"]
    assert job["gpu_hours"] == 0


def test_the_account_sync_runs_before_a_new_account_s_first_launch_only(site: Site) -> None:
    synced: list[int] = []
    failing = [True]

    def sync_accounts() -> None:
        synced.append(len(synced))
        if failing[0]:
            failing[0] = False
            raise RuntimeError("sacctmgr away")

    agent = Agent(site.client, site.executor, backend="memory", interval=0.01,
                  sync_accounts=sync_accounts, accounts_every=1000)  # fmt: skip
    assert agent.round().ok  # the first round syncs the accounts (failing: the loop goes on)
    assert len(synced) == 1
    first = site.submit()
    site.dispatcher.step()
    assert agent.round().launched == [f"fab-{first}"]
    assert len(synced) == 2  # the job's account: synced before its first launch
    second = site.submit()
    site.dispatcher.step()
    assert agent.round().launched == [f"fab-{second}"]
    assert len(synced) == 2  # the same account and user: launched without a sync
    assert agent.synced_for != set()


def test_an_idle_agent_watching_for_work_launches_a_placed_job_without_waiting_its_interval(
    site: Site,
) -> None:
    from fabbrica.backends.agent_link import OFFERS
    from fabbrica.server import publish_offers

    agent = Agent(site.client, site.executor, backend="memory", interval=3600,
                  watch=lambda: OFFERS.watch("jaif"))  # fmt: skip
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert poll(lambda: agent.rounds >= 1)  # its capacity is in: it now waits an hour
        job_id = site.submit()
        site.dispatcher.step()  # placed at the agent's factory: the link wakes the agent
        publish_offers(site.db)  # and the loop's next step, once that is committed
        assert poll(lambda: site.job(job_id)["state"] == "running")
        assert agent.rounds >= 2  # woken: a round after the first, not an hour later
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()  # a stop ends its wait too


def poll(check: Callable[[], bool], seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return False


def hold_long(site: Site) -> None:
    """The API holds a sync up to 10 minutes (the cap follows the lease: 1 day here)."""
    ctx: AppContext = site.api.app.state.ctx  # type: ignore[attr-defined]
    ctx.agent_wait_s = 600
    ctx.agent_lease = dt.timedelta(days=1)
    site.api.timeout = None  # the TestClient refuses a timeout per request


def test_an_agent_over_http_is_held_by_the_api_and_launches_a_placed_job_at_once(
    site: Site,
) -> None:
    """No watch: the agent's sync asks the API to hold it for its interval (an hour), and
    the offer of the control loop (its `offers` step, after the commit) answers it."""
    from fabbrica.backends.agent_link import OFFERS
    from fabbrica.server import publish_offers

    hold_long(site)
    agent = Agent(site.client, site.executor, backend="memory", interval=3600)
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert poll(lambda: site.executor.capacity() != [] and agent_seen(site))
        time.sleep(0.3)  # its second sync is held now: nothing to launch
        job_id = site.submit()
        site.dispatcher.step()
        publish_offers(site.db)
        assert poll(lambda: site.job(job_id)["state"] == "running", 60)  # not in an hour
    finally:
        stop.set()
        OFFERS.release()  # its sync held now answers
        thread.join(10)
    assert not thread.is_alive()


def agent_seen(site: Site) -> bool:
    admin = bearer(ADMIN_TOKEN)
    rows = site.api.get(f"{API}/agents", headers=admin).json()
    return any(r["factory"] == "jaif" and r["last_seen_at"] for r in rows)


def held_now(n: int) -> bool:
    from fabbrica.backends.agent_link import OFFERS

    return OFFERS.held("jaif") == n


def test_held_syncs_hold_no_worker_thread_and_no_database_connection(site: Site) -> None:
    """More held syncs than the thread pool has threads (40), the database pool has
    connections (15) and SQLite's request limit has slots (16): the API still answers,
    and one offer answers them all."""
    from fabbrica.backends.agent_link import OFFERS
    from fabbrica.server import publish_offers

    hold_long(site)
    capacity = {"partition": "booster", "gpu_model": "gh200", "total_gpus": 4, "free_gpus": 4}
    body = {"backend": "memory", "capacity": [capacity], "wait_s": 600}
    headers = {"Authorization": site.client.http.headers["Authorization"]}
    answers: list[list[str]] = []

    def held() -> None:
        made = site.api.post(f"{API}/agent/sync", headers=headers, json=body)
        answers.append([r["run_tag"] for r in made.json()["launch"]])

    threads = [threading.Thread(target=held, daemon=True) for _ in range(45)]
    try:
        for n, thread in enumerate(threads, 1):  # one after the other: each held, then the next
            thread.start()
            assert poll(partial(held_now, n)), site.db.engine.pool.status()
        assert answers == []
        job_id = site.submit()  # the API answers meanwhile: it needs a thread and connections
        site.dispatcher.step()
        assert site.job(job_id)["state"] == "dispatched"
        publish_offers(site.db)
        for thread in threads:
            thread.join(30)
    finally:
        OFFERS.release()  # should one still be held, the test ends
    assert answers == [[f"fab-{job_id}"]] * 45


class SlowToStart(InMemoryExecutor):
    """A backend whose runs stay pending until `start()` (a busy scheduler's queue)."""

    held_back = True

    def _start_waiting(self) -> None:
        if not self.held_back:
            super()._start_waiting()

    def start(self) -> None:
        self.held_back = False
        self._start_waiting()


def test_a_run_just_launched_is_reported_running_soon_after_it_starts(site: Site) -> None:
    """A launched run still pending in the backend is followed closely (no held sync): its
    start reaches the API at once, not at the end of the agent's interval (an hour)."""
    from fabbrica.backends.agent_link import OFFERS
    from fabbrica.server import publish_offers

    hold_long(site)
    executor = SlowToStart([FakePartition("booster", "gh200", 4)], now=site.clock())
    agent = Agent(site.client, executor, backend="memory", interval=3600)
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert poll(lambda: agent_seen(site))
        job_id = site.submit()
        site.dispatcher.step()
        publish_offers(site.db)
        assert poll(lambda: f"fab-{job_id}" in agent.held, 60)
        assert poll(lambda: site.job(job_id)["state"] == "dispatched")
        time.sleep(0.5)  # the agent keeps following it meanwhile
        executor.start()
        assert poll(lambda: site.job(job_id)["state"] == "running", 60)  # not in an hour
    finally:
        stop.set()
        OFFERS.release()
        thread.join(10)
    assert not thread.is_alive()
