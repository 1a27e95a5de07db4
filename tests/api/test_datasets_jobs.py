"""Jobs that read data sets, on SQLite and PostgreSQL: residency narrows placement whatever
the job's own placement says, a job no allowed factory can take is refused naming the data
set, a waiting job's reason names the residency, deletion waits for the jobs, and the local
executor gives the files read-only at $FABBRICA_DATA/<name>."""

from __future__ import annotations

import datetime as dt
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fabbrica.api.app import create_app
from fabbrica.api.deps import AppContext
from fabbrica.backends.local import LocalExecutor
from fabbrica.backends.memory import FakePartition, InMemoryExecutor
from fabbrica.catalog.local import local_factory
from fabbrica.catalog.model import Catalog
from fabbrica.services import identity
from fabbrica.services.access.calls import seed_calls
from fabbrica.services.dispatch import Dispatcher
from fabbrica.store.db import Database
from fabbrica.store.types import utcnow
from tests.api.helpers import API, Headers, assert_error, snapshot
from tests.api.test_datasets_api import add
from tests.api.test_jobs_api import stop_all, tenant
from tests.conftest import ADMIN_TOKEN, Clock, bearer


@dataclass
class Federation:
    api: TestClient
    db: Database
    files: Path
    pi: Headers
    project: str
    sites: dict[str, InMemoryExecutor]
    dispatcher: Dispatcher

    def submit(self, **spec: Any) -> Any:
        body = {"name": "t", "run": "true", "resources": {"time_limit": "1h"}, **spec}
        return self.api.post(
            f"{API}/jobs", headers=self.pi, json={"spec": body, "project": self.project}
        )

    def job(self, job_id: int) -> Any:
        return self.api.get(f"{API}/jobs/{job_id}", headers=self.pi).json()


@pytest.fixture
def federation(
    db: Database, catalog: Catalog, tmp_path: Path, clock: Clock
) -> Iterator[Federation]:
    """it4lia (IT) and jaif (DE), 4 GPUs each; a project of an Italian startup with a
    Playground allocation on each."""
    with db.session() as session:
        identity.bootstrap(session, now=clock(), token=ADMIN_TOKEN)
        seed_calls(session, catalog, clock())
    sites = {
        "it4lia": InMemoryExecutor([FakePartition("boost_usr_prod", "a100", 4)], now=clock()),
        "jaif": InMemoryExecutor([FakePartition("booster", "gh200", 4)], now=clock()),
    }
    ctx = AppContext(db=db, catalog=catalog, clock=clock, fixed_executors=sites, files=tmp_path)
    with TestClient(create_app(ctx), raise_server_exceptions=True) as api:
        admin = bearer(ADMIN_TOKEN)
        pi, project, _ = tenant_on(api, admin, ["it4lia", "jaif"])
        dispatcher = Dispatcher(db, catalog, ctx.executors, clock)
        yield Federation(api, db, tmp_path, pi, project, sites, dispatcher)


def tenant_on(api: TestClient, admin: Headers, factories: list[str]) -> tuple[Headers, str, Any]:
    token = api.post(f"{API}/users", headers=admin, json={"email": "a@b.it", "name": "A"}).json()
    h = bearer(token["token"])
    org = api.post(f"{API}/organisations", headers=h,
                   json={"name": "Org", "country": "IT", "type": "startup"}).json()  # fmt: skip
    pid = api.post(f"{API}/projects", headers=h, json={"title": "T", "org_id": org["id"]})
    project = pid.json()["id"]
    for factory in factories:
        applied = api.post(f"{API}/proposals", headers=h, json={
            "project_id": project, "call_id": f"{factory}-playground", "gpu_hours": 50,
            "months": 1, "declare_civilian_ai_act": True})  # fmt: skip
        assert applied.json()["state"] == "accepted", applied.text
    return h, project, None


def test_residency_holds_a_job_at_its_country_even_when_another_factory_is_idle(
    federation: Federation,
) -> None:
    f = federation
    add(f, {"scan.csv": b"1,2\n"}, data_class="personal", residency="IT")
    filler = f.submit(resources={"gpus": 4, "time_limit": "1h"},
                      placement={"factories": ["it4lia"]}).json()  # fmt: skip
    f.dispatcher.step()
    assert f.job(filler["id"])["factory"] == "it4lia"  # it4lia is full now
    reader = f.submit(datasets=["scans"], placement={"factories": ["it4lia", "jaif"]})
    assert reader.status_code == 201, reader.text
    f.dispatcher.step()
    waiting = f.job(reader.json()["id"])
    assert waiting["state"] == "queued"  # jaif is idle, but the data may not go there
    assert "data residency of scans@1 (IT) keeps it to it4lia" in waiting["reason"]
    # a version a queued job reads cannot be deleted
    dataset = f.api.get(f"{API}/datasets", headers=f.pi).json()[0]["id"]
    r = f.api.delete(f"{API}/datasets/{dataset}", headers=f.pi)
    assert_error(r, 409, "conflict", "version")
    f.sites["it4lia"].finish(f"fab-{filler['id']}")
    f.dispatcher.step()
    f.dispatcher.step()
    placed = f.job(reader.json()["id"])
    assert placed["state"] in ("dispatched", "running") and placed["factory"] == "it4lia"
    f.sites["it4lia"].finish(f"fab-{placed['id']}")
    f.dispatcher.step()
    assert f.job(placed["id"])["state"] == "succeeded"
    deleted = f.api.delete(f"{API}/datasets/{dataset}", headers=f.pi)
    assert deleted.json() == {"deleted": ["scans@1"]}


def test_a_job_no_allowed_factory_can_take_is_refused_naming_the_data_set(
    federation: Federation,
) -> None:
    f = federation
    add(f, {"scan.csv": b"1,2\n"}, residency="IT")
    add(f, {"x.csv": b"x\n"}, name="anywhere")
    before = snapshot(f.db)
    for spec in (
        {"datasets": ["scans"], "placement": {"factories": ["jaif"]}},
        {"datasets": ["anywhere", "scans@1"], "resources": {"gpu_model": "gh200"}},
        {"datasets": ["scans"], "placement": {"countries": ["DE"]}},
    ):
        r = f.submit(**spec)
        assert_error(r, 422, "invalid", "datasets")
        assert "scans@1 (IT)" in r.json()["error"]["message"]
    cases: list[tuple[dict[str, Any], str]] = [
        ({"datasets": ["nope"]}, "datasets"),
        ({"datasets": ["scans@7"]}, "datasets"),
        ({"datasets": ["Bad Name"]}, "spec.datasets"),
        ({"datasets": ["scans", "scans@1"]}, "spec.datasets"),
    ]
    for bad, field in cases:
        assert_error(f.submit(**bad), 422, "invalid", field)
    assert snapshot(f.db) == before
    # without the residency, the same job is placed at jaif
    ok = f.submit(datasets=["anywhere"], placement={"factories": ["jaif"]})
    assert ok.status_code == 201, ok.text


def test_eu_residency_allows_every_member_state(federation: Federation) -> None:
    f = federation
    add(f, {"a.csv": b"a\n"}, residency="EU")
    job = f.submit(datasets=["scans"], placement={"factories": ["jaif"]})
    assert job.status_code == 201, job.text
    f.dispatcher.step()
    assert f.job(job.json()["id"])["factory"] == "jaif"


@dataclass
class Local:
    api: TestClient
    db: Database
    files: Path
    pi: Headers
    project: str
    dispatcher: Dispatcher


@pytest.fixture
def local(db: Database, catalog: Catalog, tmp_path: Path) -> Iterator[Local]:
    full = catalog.with_factory(local_factory(2))
    with db.session() as session:
        identity.bootstrap(session, now=utcnow(), token=ADMIN_TOKEN)
        seed_calls(session, full, utcnow())
    executor = LocalExecutor(tmp_path / "jobs", gpus=2)
    ctx = AppContext(db=db, catalog=full, fixed_executors={"local": executor}, files=tmp_path)
    with TestClient(create_app(ctx), raise_server_exceptions=True) as api:
        pi, project, _ = tenant(api, bearer(ADMIN_TOKEN), "pi@startup.it", 10)
        yield Local(api, db, tmp_path, pi, project, Dispatcher(db, full, ctx.executors, utcnow))
    stop_all(executor)


def test_the_local_executor_gives_the_files_read_only_at_fabbrica_data(local: Local) -> None:
    add(local, {"train/x.csv": b"1,2\n", "labels.csv": b"cat\n"}, residency="EU")
    run = (
        'cat "$FABBRICA_DATA/scans/train/x.csv" "$FABBRICA_DATA/scans/labels.csv"; '
        'echo "$FABBRICA_DATA"'
    )
    spec = {"name": "t", "run": run, "datasets": ["scans@1"], "resources": {"time_limit": "5m"}}
    job = local.api.post(
        f"{API}/jobs", headers=local.pi, json={"spec": spec, "project": local.project}
    ).json()
    deadline = dt.datetime.now() + dt.timedelta(seconds=30)
    shown = job
    while shown["state"] not in ("succeeded", "failed") and dt.datetime.now() < deadline:
        local.dispatcher.step()
        shown = local.api.get(f"{API}/jobs/{job['id']}", headers=local.pi).json()
    assert shown["state"] == "succeeded", shown
    log = local.api.get(f"{API}/jobs/{job['id']}/logs", headers=local.pi).text.splitlines()
    assert log[:2] == ["1,2", "cat"]
    data = Path(log[2])
    assert data.name == "data" and data.parent.name == f"fab-{job['id']}"
    for path in (data / "scans", data / "scans" / "train"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o555
    for path in (data / "scans" / "labels.csv", data / "scans" / "train" / "x.csv"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o444
    if os.geteuid() != 0:  # root writes whatever the modes say
        with pytest.raises(PermissionError):
            (data / "scans" / "labels.csv").write_text("changed")
