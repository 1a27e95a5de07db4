"""Data sets staged by site agents, against the real API (in process, both databases): a
version is fetched once for two jobs and checked; a slow staging shows its progress as the
job's reason while the agent keeps syncing, and the job launches after it; the bytes go
only to a factory the residency allows (the API refuses the others' agents); the cache
keeps to its size."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from fabbrica.agent.client import AgentClient
from fabbrica.agent.data_cache import DataCache
from fabbrica.agent.loop import Agent
from fabbrica.api.app import create_app
from fabbrica.api.deps import AppContext
from fabbrica.backends.memory import FakePartition, InMemoryExecutor
from fabbrica.catalog.model import Catalog
from fabbrica.core.executor import DataMount
from fabbrica.services import identity
from fabbrica.services.access.calls import seed_calls
from fabbrica.services.dispatch import Dispatcher
from fabbrica.store.db import Database
from fabbrica.store.models import Dataset
from tests.api.helpers import API, Headers
from tests.api.test_datasets_api import add
from tests.api.test_datasets_jobs import tenant_on
from tests.conftest import ADMIN_TOKEN, Clock, bearer

A = b"alpha" * 1000
B = b"beta" * 1000


@dataclass
class Sites:
    api: TestClient
    db: Database
    files: Path
    pi: Headers
    project: str
    dispatcher: Dispatcher
    agents: dict[str, Agent]
    clients: dict[str, AgentClient]

    def submit(self, factory: str) -> int:
        spec = {"name": "t", "run": "train", "datasets": ["scans"],
                "placement": {"factories": [factory]}}  # fmt: skip
        body = {"spec": spec, "project": self.project}
        r = self.api.post(f"{API}/jobs", headers=self.pi, json=body)
        assert r.status_code == 201, r.text
        return int(r.json()["id"])

    def job(self, job_id: int) -> Any:
        return self.api.get(f"{API}/jobs/{job_id}", headers=self.pi).json()


@pytest.fixture
def sites(db: Database, catalog: Catalog, tmp_path: Path, clock: Clock) -> Iterator[Sites]:
    with db.session() as session:
        identity.bootstrap(session, now=clock(), token=ADMIN_TOKEN)
        seed_calls(session, catalog, clock())
    ctx = AppContext(db=db, catalog=catalog, clock=clock, files=tmp_path / "server")
    with TestClient(create_app(ctx)) as api, ExitStack() as stack:
        admin = bearer(ADMIN_TOKEN)
        pi, project, _ = tenant_on(api, admin, ["it4lia", "jaif"])
        partitions = {"jaif": ("booster", "gh200"), "it4lia": ("boost_usr_prod", "a100")}
        agents, clients = {}, {}
        for factory, (partition, model) in partitions.items():
            token = api.post(f"{API}/agents/{factory}/token", headers=admin).json()["token"]
            executor = InMemoryExecutor([FakePartition(partition, model, 4)], now=clock())
            http = stack.enter_context(TestClient(api.app))  # one per agent: its own token
            client = AgentClient("http://testserver", token, http=cast("httpx.Client", http))
            clients[factory] = client
            agents[factory] = Agent(client, executor, backend="memory", interval=0.01,
                                    work_dir=tmp_path / factory)  # fmt: skip
            assert agents[factory].round().ok  # capacity: placeable from now on
        dispatcher = Dispatcher(db, catalog, ctx.executors, clock)
        yield Sites(api, db, tmp_path / "server", pi, project, dispatcher, agents, clients)


def staged(agent: Agent) -> list[str]:
    """Rounds until no staging is left: the run tags launched."""
    launched: list[str] = []
    for _ in range(100):
        result = agent.round()
        assert result.ok, result.error
        launched += result.launched
        if not agent.staging:
            return launched
    raise AssertionError(f"still staging: {agent.staging}")


def test_two_jobs_on_one_version_fetch_it_once_and_read_the_same_bytes(sites: Sites) -> None:
    add(sites, {"a.bin": A, "sub/b.bin": B}, residency="DE")
    first, second = sites.submit("jaif"), sites.submit("jaif")
    sites.dispatcher.step()
    assert sites.job(first)["state"] == "dispatched", sites.job(first)
    jaif = sites.agents["jaif"]
    assert set(staged(jaif)) == {f"fab-{first}", f"fab-{second}"}
    assert jaif.data.fetches == 2  # two files, once each, for both jobs
    for job in (first, second):
        data = jaif.work_dir / "data" / f"fab-{job}" / "scans"
        assert (data / "a.bin").read_bytes() == A and (data / "sub" / "b.bin").read_bytes() == B
    third = sites.submit("jaif")
    sites.dispatcher.step()
    assert staged(jaif) == [f"fab-{third}"]
    assert jaif.data.fetches == 2  # cached
    # another factory's agent gets nothing of it
    url = f"{API}/agent/jobs/{first}/objects/{hashlib.sha256(A).hexdigest()}"
    assert sites.clients["it4lia"].http.get(url).status_code == 404
    assert not list((sites.agents["it4lia"].work_dir / "data-cache" / "objects").iterdir())


def test_a_factory_outside_the_residency_never_receives_the_bytes(sites: Sites) -> None:
    add(sites, {"a.bin": A}, residency="DE")
    job = sites.submit("jaif")
    sites.dispatcher.step()
    assert sites.job(job)["factory"] == "jaif"
    with sites.db.session() as session:  # placed there by whatever path: the API still refuses
        session.execute(update(Dataset).values(residency="IT"))
        session.commit()
    url = f"{API}/agent/jobs/{job}/objects/{hashlib.sha256(A).hexdigest()}"
    r = sites.clients["jaif"].http.get(url)
    assert r.status_code == 403 and r.json()["error"]["field"] == "sha256"
    jaif = sites.agents["jaif"]
    staged(jaif)  # stages, is refused: the job fails, saying why
    jaif.round()
    shown = sites.job(job)
    assert shown["state"] == "failed" and "data staging failed" in shown["reason"]
    cached = list((jaif.work_dir / "data-cache").rglob("*"))
    assert [p for p in cached if p.is_file()] == []
    assert not (jaif.work_dir / "data" / f"fab-{job}" / "scans" / "a.bin").exists()


def test_a_slow_staging_shows_its_progress_and_the_job_launches_after(sites: Sites) -> None:
    add(sites, {"a.bin": A, "b.bin": B})
    first, second = sites.submit("jaif"), sites.submit("jaif")
    sites.dispatcher.step()
    jaif = sites.agents["jaif"]
    jaif.stage_wait = 0.0
    fetch, reached, release = jaif.data.fetch, threading.Event(), threading.Event()

    def slow(url: str, dest: Path) -> Path:
        if url.endswith(hashlib.sha256(B).hexdigest()):  # the second file: held back
            reached.set()
            assert release.wait(30)
        return fetch(url, dest)

    jaif.data.fetch = slow
    assert jaif.round().launched == []  # staging, in the background
    assert reached.wait(30)
    progress = "staging data set scans@1 at jaif: 1 of 2 files, 4.9 of 8.8 KiB"
    for _ in range(100):  # the agent keeps syncing: the job says how far it got
        assert jaif.round().ok
        shown = [sites.job(job) for job in (first, second)]
        if all(job["reason"] == progress for job in shown):
            break  # the other job waits for the same fetch of b.bin
        reached.wait(0.05)
    assert [(job["state"], job["reason"]) for job in shown] == [("dispatched", progress)] * 2
    release.set()
    assert set(staged(jaif)) == {f"fab-{first}", f"fab-{second}"}
    assert jaif.data.fetches == 2  # each file once, for both jobs
    jaif.round()  # reports the runs launched
    for job in (first, second):
        shown = sites.job(job)
        assert shown["state"] in ("dispatched", "running") and shown["reason"] is None, shown


def test_an_agent_restarted_mid_staging_stages_the_job_again(sites: Sites) -> None:
    add(sites, {"a.bin": A, "b.bin": B})
    job = sites.submit("jaif")
    sites.dispatcher.step()
    old = sites.agents["jaif"]
    old.stage_wait = 0.0
    fetch, reached, release = old.data.fetch, threading.Event(), threading.Event()

    def stuck(url: str, dest: Path) -> Path:
        reached.set()
        assert release.wait(30)
        return fetch(url, dest)

    old.data.fetch = stuck
    try:
        assert old.round().launched == [] and reached.wait(30)
        assert old.round().ok
        assert sites.job(job)["reason"].startswith("staging data set scans@1 at jaif: 0 of 2")
        # the agent dies; a new one on the same directory is offered the job and stages it
        new = Agent(old.client, old.executor, backend="memory", interval=0.01,
                    work_dir=old.work_dir)  # fmt: skip
        assert staged(new) == [f"fab-{job}"]
        assert (new.work_dir / "data" / f"fab-{job}" / "scans" / "b.bin").read_bytes() == B
        new.round()
        assert sites.job(job)["reason"] is None
    finally:
        release.set()
        for staging in old.staging.values():
            staging.wait(30)


def test_a_job_cancelled_while_its_data_is_staged_never_launches(sites: Sites) -> None:
    add(sites, {"a.bin": A})
    job = sites.submit("jaif")
    sites.dispatcher.step()
    jaif = sites.agents["jaif"]
    jaif.stage_wait = 0.0
    fetch, reached, release = jaif.data.fetch, threading.Event(), threading.Event()

    def stuck(url: str, dest: Path) -> Path:
        reached.set()
        assert release.wait(30)
        return fetch(url, dest)

    jaif.data.fetch = stuck
    staging = []
    try:
        assert jaif.round().launched == [] and reached.wait(30)
        staging = list(jaif.staging.values())
        r = sites.api.post(f"{API}/jobs/{job}/cancel", headers=sites.pi)
        assert r.status_code == 200, r.text
        sites.dispatcher.step()
        assert jaif.round().cancelled == [f"fab-{job}"]
        assert not jaif.staging
    finally:
        release.set()
        for each in staging:
            each.wait(30)
    assert staged(jaif) == [] and jaif.executor.poll([f"fab-{job}"])[0].state.value == "unknown"
    jaif.round()
    assert sites.job(job)["state"] == "cancelled"


def test_the_cache_drops_the_least_recently_used_never_a_file_in_use(tmp_path: Path) -> None:
    blobs = {hashlib.sha256(d).hexdigest(): d for d in (b"1" * 100, b"2" * 100, b"3" * 100)}
    fetched: list[str] = []

    def fetch(url: str, dest: Path) -> Path:
        sha = url.rsplit("/", 1)[-1]
        fetched.append(sha)
        dest.write_bytes(blobs.get(sha, b"not what its name says"))
        return dest

    cache = DataCache(tmp_path / "cache", 200, fetch)
    one, two, three = list(blobs)
    for sha in (one, two, three):
        cache.get(f"/x/{sha}")
    cache.get(f"/x/{one}")  # used again: now two is the least recent
    assert cache.evict(in_use={two}) == [three]  # two is in use: three goes instead
    assert {p.name for p in (tmp_path / "cache" / "objects").iterdir()} == {one, two}
    assert fetched == [one, two, three]
    cache.stage([DataMount("d", (("x.bin", f"/x/{one}"),))], tmp_path / "run")
    assert (tmp_path / "run" / "d" / "x.bin").read_bytes() == blobs[one]
    with pytest.raises(Exception, match="sha256"):
        cache.get("/x/" + "0" * 64)
