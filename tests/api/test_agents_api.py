"""Site agents through the API, on both databases: tokens, usernames, the sync and its
leases, idempotent usage reports, accounts, logs, and one factory's agent never reaching
another factory's jobs. The control loop runs in the test (Dispatcher with AgentLinks)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from fabbrica.api.app import create_app
from fabbrica.api.deps import AppContext
from fabbrica.backends.agent_link import AgentLink
from fabbrica.catalog.model import Catalog
from fabbrica.services import identity
from fabbrica.services.access.calls import seed_calls
from fabbrica.services.dispatch import Dispatcher
from fabbrica.store.db import Database
from fabbrica.store.models import Allocation, JobLoss, UsageRecord
from tests.api.helpers import API, Headers, assert_error, snapshot
from tests.conftest import ADMIN_TOKEN, Clock, bearer

LEASE = dt.timedelta(seconds=60)
CAPACITY = {
    "jaif": {"partition": "booster", "gpu_model": "gh200", "total_gpus": 4, "free_gpus": 4},
    "it4lia": {"partition": "boost_usr_prod", "gpu_model": "a100", "total_gpus": 4, "free_gpus": 4},
}


@dataclass
class World:
    api: TestClient
    db: Database
    clock: Clock
    ctx: AppContext
    dispatcher: Dispatcher
    admin: Headers
    user: Headers
    project: str
    agents: dict[str, Headers]

    def sync(self, factory: str, runs: list[dict[str, Any]] | None = None, **extra: Any) -> Any:
        body = {"backend": "slurm", "capabilities": ["multi_node"],
                "capacity": [CAPACITY[factory]], "runs": runs or [], **extra}  # fmt: skip
        r = self.api.post(f"{API}/agent/sync", headers=self.agents[factory], json=body)
        assert r.status_code == 200, r.text
        return r.json()

    def submit(self, **resources: Any) -> int:
        spec = {"name": "t", "run": "echo hi", "resources": {"time_limit": "10m", **resources}}
        r = self.api.post(f"{API}/jobs", headers=self.user, json={"spec": spec})
        assert r.status_code == 201, r.text
        return int(r.json()["id"])

    def job(self, job_id: int) -> Any:
        return self.api.get(f"{API}/jobs/{job_id}", headers=self.user).json()


@pytest.fixture
def world(db: Database, catalog: Catalog, clock: Clock, tmp_path: Path) -> Iterator[World]:
    with db.session() as session:
        identity.bootstrap(session, now=clock(), token=ADMIN_TOKEN)
        seed_calls(session, catalog, clock())
    ctx = AppContext(db=db, catalog=catalog, clock=clock, files=tmp_path, agent_lease=LEASE)
    with TestClient(create_app(ctx)) as api:
        admin = bearer(ADMIN_TOKEN)
        made = api.post(f"{API}/users", headers=admin, json={"email": "ada@x.it", "name": "A"})
        user = bearer(made.json()["token"])
        org = api.post(f"{API}/organisations", headers=user,
                       json={"name": "O", "country": "IT", "type": "startup"}).json()  # fmt: skip
        project = api.post(
            f"{API}/projects", headers=user, json={"title": "T", "org_id": org["id"]}
        )
        pid = project.json()["id"]
        agents = {}
        for factory in ("jaif", "it4lia"):
            r = api.post(f"{API}/agents/{factory}/token", headers=admin)
            assert r.status_code == 201, r.text
            agents[factory] = bearer(r.json()["token"])
            applied = api.post(f"{API}/proposals", headers=user, json={
                "project_id": pid, "call_id": f"{factory}-playground", "gpu_hours": 50,
                "months": 1, "declare_civilian_ai_act": True})  # fmt: skip
            assert applied.json()["state"] == "accepted", applied.text
        assert isinstance(ctx.executors["jaif"], AgentLink)
        dispatcher = Dispatcher(db, catalog, ctx.executors, clock)
        yield World(api, db, clock, ctx, dispatcher, admin, user, pid, agents)


def dispatched_to(w: World, gpu_model: str) -> int:
    w.sync("jaif")
    w.sync("it4lia")
    job_id = w.submit(gpus=1, gpu_model=gpu_model)
    w.dispatcher.step()
    assert w.job(job_id)["state"] == "dispatched"
    return job_id


def run(job_id: int, state: str, **extra: Any) -> dict[str, Any]:
    return {"run_tag": f"fab-{job_id}", "state": state, **extra}


def test_a_multi_node_job_waits_for_a_factory_whose_backend_declares_it(world: World) -> None:
    """Placement reads the capability the agent reports for its backend, not the catalog."""
    world.sync("jaif", capabilities=[])
    world.sync("it4lia", capabilities=[])
    job_id = world.submit(gpus=2, nodes=2, gpu_model="gh200")
    world.dispatcher.step()
    waiting = world.job(job_id)
    assert waiting["state"] == "queued"
    assert "multi-node" in waiting["reason"]
    world.sync("jaif", capabilities=["multi_node"])
    world.dispatcher.step()
    placed = world.job(job_id)
    assert (placed["state"], placed["factory"]) == ("dispatched", "jaif")
    (launch,) = world.sync("jaif", capabilities=["multi_node"])["launch"]
    assert (placed["gpus"], launch["gpus"], launch["nodes"]) == (4, 4, 2)  # 2 on each node


def test_jobs_dispatched_since_the_agents_report_count_against_its_free_gpus(
    world: World,
) -> None:
    """The agent last said 4 GPUs free; passes before its next sync must not place more
    than those 4, however many jobs arrive meanwhile (each pass sees the report again)."""
    world.sync("jaif")
    world.sync("it4lia")
    ids = []
    for _ in range(6):  # one pass per submission, as when a submission wakes the loop
        ids.append(world.submit(gpus=1, gpu_model="gh200"))
        world.dispatcher.step()
    states = [world.job(i)["state"] for i in ids]
    assert states == ["dispatched"] * 4 + ["queued"] * 2


def test_a_job_goes_to_the_agent_of_its_factory_and_is_charged_once(world: World) -> None:
    job_id = dispatched_to(world, "gh200")
    assert world.job(job_id)["factory"] == "jaif"
    assert world.sync("it4lia")["launch"] == []  # another factory's agent is not offered it
    offer = world.sync("jaif")["launch"]
    assert [o["run_tag"] for o in offer] == [f"fab-{job_id}"]
    assert offer[0]["account"] == world.project.lower()
    assert offer[0]["partition"] == "booster" and offer[0]["gpu_model"] == "gh200"
    # launched: not offered again while the agent reports it
    answer = world.sync("jaif", [run(job_id, "pending", site_job_id="41")])
    assert answer["launch"] == [] and answer["cancel"] == []
    started = "2026-11-21T12:00:05+00:00"
    world.sync("jaif", [run(job_id, "running", site_job_id="41", started_at=started)])
    assert world.job(job_id)["state"] == "running"
    final = run(job_id, "succeeded", site_job_id="41", started_at=started,
                ended_at="2026-11-21T12:00:12+00:00", exit_code=0, gpus=1, elapsed_s=7)  # fmt: skip
    world.sync("jaif", [final])
    world.sync("jaif", [final])  # sent twice (the answer was lost): charged once
    done = world.job(job_id)
    assert done["state"] == "succeeded"
    assert done["gpu_hours"] == pytest.approx(7 / 3600)
    with world.db.session() as s:
        records = list(s.scalars(select(UsageRecord)))
        allocation = s.scalar(select(Allocation).where(Allocation.factory_id == "jaif"))
        assert allocation is not None
        assert [(r.factory_id, r.site_job_id, r.elapsed_s, r.gpus) for r in records] == [
            ("jaif", "41", 7.0, 1)
        ]
        assert allocation.used_gpu_hours == pytest.approx(7 / 3600)
        assert allocation.reserved_gpu_hours == pytest.approx(0)


def test_a_job_whose_lease_runs_out_is_queued_again_and_cancelled_where_it_shows_up(
    world: World,
) -> None:
    job_id = dispatched_to(world, "gh200")
    world.sync("jaif")  # takes it
    world.sync("jaif", [run(job_id, "running", site_job_id="7")])
    world.clock.advance(seconds=LEASE.total_seconds() - 1)
    world.dispatcher.step()
    assert world.job(job_id)["state"] == "running"  # not before the lease
    world.clock.advance(seconds=2)
    world.dispatcher.step()
    job = world.job(job_id)
    assert job["state"] == "queued" and "lost at jaif" in job["reason"]
    with world.db.session() as s:
        allocation = s.scalar(select(Allocation).where(Allocation.factory_id == "jaif"))
        assert allocation is not None and allocation.reserved_gpu_hours == pytest.approx(0)
        losses = s.execute(select(JobLoss.job_id, JobLoss.factory_id, JobLoss.lost_at)).all()
        assert [tuple(loss) for loss in losses] == [(job_id, "jaif", world.clock())]  # counted
    # the agent comes back still running it: told to cancel, nothing charged
    answer = world.sync("jaif", [run(job_id, "running", site_job_id="7")])
    assert answer["cancel"] == [f"fab-{job_id}"]
    assert world.job(job_id)["state"] in {"queued", "dispatched"}
    with world.db.session() as s:
        assert s.scalar(select(func.count()).select_from(UsageRecord)) == 0


def test_a_lost_job_placed_again_at_its_old_factory_runs_anew(world: World) -> None:
    job_id = dispatched_to(world, "gh200")
    world.sync("jaif", [run(job_id, "running", site_job_id="7")])
    world.clock.advance(seconds=LEASE.total_seconds() + 1)
    world.dispatcher.step()  # lost: queued again
    world.sync("jaif")  # the agent is back (without the run: its Slurm was down)
    world.dispatcher.step()
    job = world.job(job_id)
    assert job["state"] == "dispatched" and job["factory"] == "jaif"
    # its Slurm is back with the old run: that run is stopped, the new one is offered
    answer = world.sync("jaif", [run(job_id, "running", site_job_id="7")])
    assert answer["cancel"] == [f"fab-{job_id}"]
    assert [o["run_tag"] for o in answer["launch"]] == [f"fab-{job_id}"]
    cancelled = run(job_id, "cancelled", site_job_id="7", gpus=1, elapsed_s=80)
    world.sync("jaif", [cancelled])
    assert world.job(job_id)["state"] == "dispatched"  # the old run's end is not its end
    world.sync("jaif", [cancelled, run(job_id, "running", site_job_id="8")])  # told twice
    assert world.job(job_id)["state"] == "running"
    with world.db.session() as s:  # but the lost run is charged for its time, once
        records = s.scalars(select(UsageRecord)).all()
        assert [(r.run, r.site_job_id, r.factory_id, r.elapsed_s) for r in records] == [
            (1, "7", "jaif", 80.0)
        ]
        assert records[0].gpu_hours == pytest.approx(80 / 3600)
    assert world.job(job_id)["gpu_hours"] == pytest.approx(80 / 3600)


def test_a_lost_job_placed_at_another_factory_is_not_taken_for_its_old_run(
    world: World,
) -> None:
    """Slurm's job ids start at 1 on every cluster: the next run at it4lia may have the id
    the lost run had at jaif. It is the job's run now, not the old one (never cancelled)."""
    world.sync("jaif")
    job_id = world.submit(gpus=1)  # any model: jaif or it4lia
    world.dispatcher.step()
    first = world.job(job_id)["factory"]
    other = "it4lia" if first == "jaif" else "jaif"
    world.sync(first, [run(job_id, "running", site_job_id="7")])
    world.clock.advance(seconds=LEASE.total_seconds() + 1)
    world.dispatcher.step()  # lost at the first factory
    assert world.job(job_id)["state"] == "queued"
    world.sync(other)  # only the other factory answers now
    world.dispatcher.step()
    assert world.job(job_id)["factory"] == other
    answer = world.sync(other, [run(job_id, "running", site_job_id="7")])
    assert answer["cancel"] == []
    assert world.job(job_id)["state"] == "running"
    # while the first factory's report of its old run (the same id) is still stale there
    back = world.sync(first, [run(job_id, "running", site_job_id="7")])
    assert back["cancel"] == [f"fab-{job_id}"]
    assert world.job(job_id)["state"] == "running"


def test_a_quiet_agent_gets_no_new_work(world: World) -> None:
    world.sync("jaif")
    world.clock.advance(seconds=LEASE.total_seconds() / 2 - 1)  # fresh for half its lease
    job_id = world.submit(gpus=1, gpu_model="gh200")
    world.dispatcher.step()
    assert world.job(job_id)["state"] == "dispatched"
    world.sync("jaif")
    world.clock.advance(seconds=LEASE.total_seconds() / 2 + 1)  # its capacity is stale now
    job_id = world.submit(gpus=1, gpu_model="gh200")
    world.dispatcher.step()
    assert world.job(job_id)["state"] == "queued"
    world.sync("jaif")
    world.dispatcher.step()
    assert world.job(job_id)["state"] == "dispatched"


def test_cancel_before_the_agent_submitted_it_and_after(world: World) -> None:
    first = dispatched_to(world, "gh200")
    assert world.api.post(f"{API}/jobs/{first}/cancel", headers=world.user).status_code == 200
    world.dispatcher.step()
    assert world.job(first)["state"] == "cancelled"
    assert world.sync("jaif")["launch"] == []
    second = dispatched_to(world, "gh200")
    world.sync("jaif", [run(second, "pending", site_job_id="9")])
    world.api.post(f"{API}/jobs/{second}/cancel", headers=world.user)
    world.dispatcher.step()
    answer = world.sync("jaif", [run(second, "running", site_job_id="9")])
    assert answer["cancel"] == [f"fab-{second}"]
    world.sync("jaif", [run(second, "cancelled", site_job_id="9", gpus=1, elapsed_s=2)])
    assert world.job(second)["state"] == "cancelled"


def test_another_factorys_agent_cannot_reach_a_job(world: World) -> None:
    job_id = dispatched_to(world, "gh200")
    world.sync("jaif")
    before = snapshot(world.db)
    answer = world.sync("it4lia", [run(job_id, "succeeded", gpus=1, elapsed_s=99)])
    assert answer["cancel"] == []  # finished there: nothing to stop, and nothing charged
    answer = world.sync("it4lia", [run(job_id, "running")])
    assert answer["cancel"] == [f"fab-{job_id}"]
    after = snapshot(world.db)
    assert {k: v for k, v in after.items() if k != "agents"} == {
        k: v for k, v in before.items() if k != "agents"
    }
    other = world.agents["it4lia"]
    r = world.api.post(f"{API}/agent/jobs/{job_id}/log", headers=other, content=b"x")
    assert_error(r, 404, "not_found", field="job_id")
    r = world.api.get(f"{API}/agent/jobs/{job_id}/workdir", headers=other)
    assert_error(r, 404, "not_found", field="job_id")


def test_logs_are_appended_by_offset_and_served_to_the_user(world: World) -> None:
    job_id = dispatched_to(world, "gh200")
    agent = world.agents["jaif"]
    url = f"{API}/agent/jobs/{job_id}/log"
    agent = {**agent, "Content-Type": "application/octet-stream"}
    assert world.api.post(url, headers=agent, content=b"abc").json() == {"size": 3}
    r = world.api.post(f"{url}?offset=5", headers=agent, content=b"zz")
    assert_error(r, 409, "conflict", field="offset")
    assert world.api.post(f"{url}?offset=1", headers=agent, content=b"XY").json() == {"size": 3}
    assert world.api.post(f"{url}?offset=3", headers=agent, content=b"\x00\n").json() == {"size": 5}
    logs = world.api.get(f"{API}/jobs/{job_id}/logs", headers=world.user)
    assert logs.status_code == 200 and logs.content == b"aXY\x00\n"


def test_accounts_list_the_factorys_allocations_and_usernames(world: World) -> None:
    r = world.api.put(f"{API}/agents/jaif/usernames", headers=world.admin,
                      json={"email": "ada@x.it", "username": "ada"})  # fmt: skip
    assert r.status_code == 200, r.text
    accounts = world.api.get(f"{API}/agent/accounts", headers=world.agents["jaif"]).json()
    assert accounts == [
        {"account": world.project.lower(), "project": world.project, "state": "active",
         "gpu_minutes": 3000, "users": ["ada"]}
    ]  # fmt: skip
    it4lia = world.api.get(f"{API}/agent/accounts", headers=world.agents["it4lia"]).json()
    assert it4lia[0]["users"] == []  # no username mapped there
    offer = dispatched_to(world, "gh200")
    launch = world.sync("jaif")["launch"]
    assert [(o["run_tag"], o["user"]) for o in launch] == [(f"fab-{offer}", "ada")]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"email": "ada@x.it", "username": "Ada Lovelace"}, 422, "username"),
        ({"email": "ada@x.it", "username": "root;rm"}, 422, "username"),
        ({"email": "nobody@x.it", "username": "ada"}, 404, "email"),
    ],
)
def test_bad_usernames_are_refused(
    world: World, body: dict[str, str], status: int, field: str
) -> None:
    before = snapshot(world.db)
    r = world.api.put(f"{API}/agents/jaif/usernames", headers=world.admin, json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["field"] == field
    assert snapshot(world.db) == before


def test_only_staff_manage_agents_and_only_agents_sync(world: World) -> None:
    before = snapshot(world.db)
    for method, path, body in [
        ("POST", "/agents/jaif/token", None),
        ("GET", "/agents", None),
        ("PUT", "/agents/jaif/usernames", {"email": "ada@x.it", "username": "ada"}),
    ]:
        r = world.api.request(method, API + path, headers=world.user, json=body)
        assert_error(r, 403, "forbidden")
    r = world.api.post(f"{API}/agent/sync", headers=world.user, json={"backend": "slurm"})
    assert_error(r, 403, "forbidden")
    r = world.api.get(f"{API}/agent/accounts", headers=world.admin)
    assert_error(r, 403, "forbidden")
    r = world.api.post(f"{API}/users", headers=world.admin,
                       json={"email": "a@x.it", "name": "A", "role": "agent"})  # fmt: skip
    assert_error(r, 422, "invalid", field="role")
    r = world.api.post(f"{API}/agents/atlantis/token", headers=world.admin)
    assert r.status_code in (404, 422)
    assert snapshot(world.db) == before
    listed = world.api.get(f"{API}/agents", headers=world.admin).json()
    assert [a["factory"] for a in listed] == ["it4lia", "jaif"]


@pytest.mark.parametrize(
    "runs",
    [
        [{"run_tag": "fab-x", "state": "running"}],
        [{"run_tag": "fab-1", "state": "exploded"}],
        [{"run_tag": "fab-1", "state": "running", "elapsed_s": -1}],
        [{"run_tag": "fab-1", "state": "running", "site_job_id": "1; rm -rf /"}],
    ],
)
def test_a_bad_report_is_refused_and_changes_nothing(
    world: World, runs: list[dict[str, Any]]
) -> None:
    before = snapshot(world.db)
    body = {"backend": "slurm", "runs": runs}
    r = world.api.post(f"{API}/agent/sync", headers=world.agents["jaif"], json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"].startswith("runs.0.")
    assert snapshot(world.db) == before


def test_a_factory_whose_agent_registers_later_takes_jobs_at_once(world: World) -> None:
    """A submission checks the factories the API process saw connected, without reading
    them again each time; one refused there is checked again on those connected now."""
    applied = world.api.post(f"{API}/proposals", headers=world.user, json={
        "project_id": world.project, "call_id": "lumi-aif-playground", "gpu_hours": 50,
        "months": 1, "declare_civilian_ai_act": True})  # fmt: skip
    assert applied.json()["state"] == "accepted", applied.text
    spec = {"name": "t", "run": "echo hi", "resources": {"gpus": 1, "gpu_model": "mi250x",
                                                         "time_limit": "10m"}}  # fmt: skip
    refused = world.api.post(f"{API}/jobs", headers=world.user, json={"spec": spec})
    assert_error(refused, 422, "invalid", "resources")  # lumi-aif has no agent yet
    assert "lumi-aif" not in world.ctx.executors.seen()
    made = world.api.post(f"{API}/agents/lumi-aif/token", headers=world.admin)
    assert made.status_code == 201, made.text
    queued = world.api.post(f"{API}/jobs", headers=world.user, json={"spec": spec})
    assert queued.status_code == 201, queued.text
    assert "lumi-aif" in world.ctx.executors.seen()


def test_a_run_past_its_time_limit_is_charged_what_the_site_counted_never_past_the_grant(
    world: World,
) -> None:
    """Slurm ends a run some seconds past its time limit (it checks every 30 s or so, then
    waits KillWait): the charge is what sacct shows, past the reservation (the 10-minute
    worst case) from what the allocation has left, and never more than the grant."""
    over = dispatched_to(world, "gh200")  # 1 GPU, 10 minutes reserved (per GPU at jaif)
    world.sync("jaif", [run(over, "running", site_job_id="11")])
    world.sync("jaif", [run(over, "timed_out", site_job_id="11", gpus=1, elapsed_s=637)])
    assert world.job(over)["gpu_hours"] == pytest.approx(637 / 3600)  # not cut at 600 s
    huge = dispatched_to(world, "gh200")
    world.sync("jaif", [run(huge, "running", site_job_id="12")])
    world.sync("jaif", [run(huge, "timed_out", site_job_id="12", gpus=1, elapsed_s=10**6)])
    with world.db.session() as s:
        allocation = s.scalar(select(Allocation).where(Allocation.factory_id == "jaif"))
        assert allocation is not None
        assert allocation.used_gpu_hours == pytest.approx(allocation.granted_gpu_hours)
        assert allocation.reserved_gpu_hours == pytest.approx(0)
    assert world.job(huge)["gpu_hours"] == pytest.approx(50 - 637 / 3600)  # what was left
