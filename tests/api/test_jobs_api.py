"""Jobs through the API on both databases, with the real local executor and dispatcher."""

from __future__ import annotations

import io
import os
import signal
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from fabbrica.api.app import create_app
from fabbrica.api.deps import AppContext
from fabbrica.backends.local import LocalExecutor
from fabbrica.catalog.local import local_factory
from fabbrica.catalog.model import Catalog
from fabbrica.services import identity
from fabbrica.services.access.calls import seed_calls
from fabbrica.services.dispatch import Dispatcher
from fabbrica.store.db import Database
from fabbrica.store.models import Allocation, UsageRecord
from fabbrica.store.types import utcnow
from tests.api.helpers import API, Headers, assert_error, snapshot
from tests.conftest import ADMIN_TOKEN, bearer

FINISHED = {"succeeded", "failed", "cancelled", "timed_out"}


@dataclass
class World:
    api: TestClient
    db: Database
    dispatcher: Dispatcher
    admin: Headers
    pi: Headers
    project: str
    allocation: int
    other: Headers

    def run_loop_until(self, job_id: int, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.dispatcher.step()
            job: dict[str, Any] = self.api.get(f"{API}/jobs/{job_id}", headers=self.pi).json()
            if job["state"] in FINISHED:
                return job
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} did not end: {job}")


def tenant(api: TestClient, admin: Headers, email: str, hours: float) -> tuple[Headers, str, int]:
    token = api.post(f"{API}/users", headers=admin, json={"email": email, "name": "X"}).json()
    h = bearer(token["token"])
    org = api.post(
        f"{API}/organisations", headers=h, json={"name": "Org", "country": "IT", "type": "startup"}
    ).json()
    project = api.post(f"{API}/projects", headers=h, json={"title": "T", "org_id": org["id"]})
    pid = project.json()["id"]
    applied = api.post(f"{API}/proposals", headers=h, json={
        "project_id": pid, "call_id": "local-playground", "gpu_hours": hours, "months": 1,
        "declare_civilian_ai_act": True})  # fmt: skip
    assert applied.json()["state"] == "accepted", applied.text
    return h, pid, applied.json()["allocation"]["id"]


@pytest.fixture
def world(db: Database, catalog: Catalog, tmp_path: Path) -> Iterator[World]:
    full = catalog.with_factory(local_factory(4))
    with db.session() as session:
        identity.bootstrap(session, now=utcnow(), token=ADMIN_TOKEN)
        seed_calls(session, full, utcnow())
    executors = {"local": LocalExecutor(tmp_path / "jobs", gpus=4)}
    ctx = AppContext(db=db, catalog=full, fixed_executors=executors, files=tmp_path)
    with TestClient(create_app(ctx), raise_server_exceptions=True) as api:
        admin = bearer(ADMIN_TOKEN)
        pi, project, allocation = tenant(api, admin, "pi@startup.it", 10)
        other, _, _ = tenant(api, admin, "other@startup.it", 10)
        dispatcher = Dispatcher(db, full, ctx.executors, utcnow)
        yield World(api, db, dispatcher, admin, pi, project, allocation, other)
    stop_all(executors["local"])


def stop_all(executor: LocalExecutor) -> None:
    """End what a test left running, and reap it."""
    for proc in executor._procs.values():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def spec(run: str, **resources: Any) -> dict[str, Any]:
    return {"name": "t", "run": run, "resources": {"time_limit": "5m", **resources}}


def submit(w: World, body: dict[str, Any], headers: Headers | None = None) -> Any:
    return w.api.post(
        f"{API}/jobs", headers=headers or w.pi, json={"spec": body, "project": w.project}
    )


def test_a_job_runs_is_charged_once_and_exactly(world: World) -> None:
    job = submit(world, spec("echo hello; sleep 0.3", gpus=2))
    assert job.status_code == 201, job.text
    assert job.json()["state"] == "queued"
    done = world.run_loop_until(job.json()["id"])
    assert done["state"] == "succeeded" and done["exit_code"] == 0
    assert done["factory"] == "local" and done["partition"] == "local"
    elapsed = _t(done["ended_at"]) - _t(done["started_at"])
    assert done["gpu_hours"] == pytest.approx(2 * elapsed / 3600, rel=1e-6)
    logs = world.api.get(f"{API}/jobs/{done['id']}/logs", headers=world.pi)
    assert logs.text.strip() == "hello"
    with world.db.session() as s:
        allocation = s.get(Allocation, world.allocation)
        assert allocation is not None
        assert allocation.used_gpu_hours == pytest.approx(done["gpu_hours"])
        assert allocation.reserved_gpu_hours == 0
        assert len(list(s.scalars(select(UsageRecord)))) == 1
    world.dispatcher.step()  # another round charges nothing more
    with world.db.session() as s:
        assert len(list(s.scalars(select(UsageRecord)))) == 1
    usage = world.api.get(f"{API}/usage", headers=world.pi, params={"by": "factory"}).json()
    assert usage == [{"key": "local", "jobs": 1, "gpu_hours": pytest.approx(done["gpu_hours"])}]


def _t(text: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(text).timestamp()


def test_a_multipart_submission_with_a_workdir(world: World) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = b"print('from the workdir')\n"
        info = tarfile.TarInfo("main.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    r = world.api.post(
        f"{API}/jobs", headers=world.pi,
        data={"spec": "name: w\nrun: python3 main.py && echo x > outputs/o.txt\n",
              "project": world.project},
        files={"workdir": ("w.tar.gz", buffer.getvalue(), "application/gzip")},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    assert world.run_loop_until(r.json()["id"])["state"] == "succeeded"
    out = world.api.get(f"{API}/jobs/{r.json()['id']}/outputs", headers=world.pi)
    with tarfile.open(fileobj=io.BytesIO(out.content)) as tar:
        assert "outputs/o.txt" in tar.getnames()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "t", "run": "x", "colour": "blue"}, "spec.colour"),
        (spec("x", gpus=0), "spec.resources.gpus"),
        (spec("x", gpus=100000), "spec.resources.gpus"),
        (
            {"name": "t", "run": "x", "resources": {"time_limit": "forever"}},
            "spec.resources.time_limit",
        ),
        (spec("x", nodes=2), "resources"),
        ({**spec("x"), "placement": {"factories": ["atlantis"]}}, "placement.factories"),
        (spec("x", gpu_model="mi300x"), "resources.gpu_model"),
        ({**spec("x"), "outputs": ["../../etc"]}, "spec.outputs"),
        (spec("x", gpus=4, time_limit="3h"), "resources"),  # 12 GPU-hours > 10 granted
        (spec("x", gpus=5), "resources"),  # the local factory has 4
    ],
)
def test_bad_specs_are_refused_with_the_field_and_change_nothing(
    world: World, body: dict[str, Any], field: str
) -> None:
    before = snapshot(world.db)
    assert_error(submit(world, body), 422, "invalid", field)
    assert snapshot(world.db) == before


def test_the_refusal_gives_the_numbers(world: World) -> None:
    r = submit(world, spec("x", gpus=4, time_limit="3h"))
    message = r.json()["error"]["message"]
    assert "12.00 GPU-hours" in message and "10.00" in message


def test_yaml_text_and_oversized_or_nested_specs(world: World) -> None:
    ok = world.api.post(
        f"{API}/jobs",
        headers=world.pi,
        json={"spec": "name: y\nrun: 'true'\n", "project": world.project},
    )
    assert ok.status_code == 201, ok.text
    nested = "name: y\nrun: x\nenv: " + "[" * 3000 + "]" * 3000
    r = world.api.post(
        f"{API}/jobs", headers=world.pi, json={"spec": nested, "project": world.project}
    )
    assert_error(r, 422, "invalid", "spec.env")
    huge = world.api.post(
        f"{API}/jobs", headers=world.pi, content=b'{"spec": "' + b"x" * (50 * 1024 * 1024) + b'"}'
    )
    assert_error(huge, 422, "invalid", "spec")
    assert "the limit is" in huge.json()["error"]["message"]


def test_another_tenant_never_sees_or_touches_a_job(world: World) -> None:
    job = submit(world, spec("sleep 0.2")).json()
    base = f"/jobs/{job['id']}"
    for method, url in [
        ("GET", base), ("POST", f"{base}/cancel"), ("GET", f"{base}/logs"),
        ("GET", f"{base}/outputs"),
    ]:  # fmt: skip
        r = world.api.request(method, f"{API}{url}", headers=world.other)
        assert_error(r, 404, "not_found", "job_id")
    assert world.api.get(f"{API}/jobs", headers=world.other).json() == []
    r = submit(world, spec("true"), headers=world.other)  # into a project not theirs
    assert_error(r, 404, "not_found", "project")
    assert world.api.get(f"{API}/usage", headers=world.other).json() == []


def test_cancel_a_queued_and_a_running_job(world: World) -> None:
    queued = submit(world, spec("sleep 30")).json()
    r = world.api.post(f"{API}/jobs/{queued['id']}/cancel", headers=world.pi)
    assert r.json()["state"] == "cancelled"
    running = submit(world, spec("sleep 30")).json()
    world.dispatcher.step()
    assert (
        world.api.get(f"{API}/jobs/{running['id']}", headers=world.pi).json()["state"] == "running"
    )
    began = time.monotonic()
    world.api.post(f"{API}/jobs/{running['id']}/cancel", headers=world.pi)
    done = world.run_loop_until(running["id"])
    assert time.monotonic() - began < 5
    assert done["state"] == "cancelled"
    assert done["gpu_hours"] < 5 / 3600 + 1e-9  # charged for the seconds it ran only


def test_time_limit_ends_the_job_timed_out(world: World) -> None:
    job = submit(world, spec("sleep 30", time_limit="1s")).json()
    assert world.run_loop_until(job["id"])["state"] == "timed_out"


def test_a_waiting_job_says_why(world: World) -> None:
    first = submit(world, spec("sleep 30", gpus=4)).json()
    second = submit(world, spec("sleep 1", gpus=2)).json()
    world.dispatcher.step()
    waiting = world.api.get(f"{API}/jobs/{second['id']}", headers=world.pi).json()
    assert waiting["state"] == "queued"
    assert "earliest estimated start" in waiting["reason"] and "local" in waiting["reason"]
    world.api.post(f"{API}/jobs/{first['id']}/cancel", headers=world.pi)
    assert world.run_loop_until(second["id"])["state"] == "succeeded"


def test_concurrent_submissions_and_dispatchers_never_overdraw(world: World) -> None:
    """50 submissions at once, two dispatchers racing: used + reserved <= granted."""
    errors: list[str] = []

    def one(i: int) -> None:
        try:
            r = submit(world, spec("sleep 0.2", gpus=1, time_limit="30m"))  # 0.5 GPU-h worst
        except Exception as exc:
            errors.append(repr(exc)[:500])
            return
        if r.status_code != 201:
            errors.append(r.text)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    stop = threading.Event()
    seen: list[float] = []

    def watch() -> None:
        while not stop.is_set():
            with world.db.engine.connect() as conn:
                row = conn.execute(
                    select(
                        Allocation.used_gpu_hours,
                        Allocation.reserved_gpu_hours,
                        Allocation.granted_gpu_hours,
                    ).where(Allocation.id == world.allocation)
                ).one()
            seen.append(row[0] + row[1] - row[2])
            time.sleep(0.01)

    def loop() -> None:
        for _ in range(40):
            try:
                world.dispatcher.step()
            except Exception as exc:  # a lock timeout would show here
                errors.append(repr(exc))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    loops = [threading.Thread(target=loop) for _ in range(2)]
    for t in loops:
        t.start()
    for t in loops:
        t.join()
    stop.set()
    watcher.join()
    assert not errors
    assert seen and max(seen) <= 1e-9
    with world.db.session() as s:
        a = s.get(Allocation, world.allocation)
        assert a is not None
        assert a.used_gpu_hours + a.reserved_gpu_hours <= a.granted_gpu_hours + 1e-9
        charged = sum(u.gpu_hours for u in s.scalars(select(UsageRecord)))
        assert a.used_gpu_hours == pytest.approx(charged)


def test_the_log_of_a_job_not_started_yet_is_empty_with_its_state(world: World) -> None:
    blocker = submit(world, spec("sleep 30", gpus=4)).json()
    world.dispatcher.step()
    waiting = submit(world, spec("echo later", gpus=4)).json()  # no room: stays queued
    world.dispatcher.step()
    logs = world.api.get(f"{API}/jobs/{waiting['id']}/logs?offset=0", headers=world.pi)
    assert logs.status_code == 200, logs.text
    assert logs.content == b"" and logs.headers["X-Next-Offset"] == "0"
    assert logs.headers["X-Job-State"] == "queued"
    assert world.api.get(f"{API}/jobs/{waiting['id']}/logs", headers=world.other).status_code == 404
    world.api.post(f"{API}/jobs/{blocker['id']}/cancel", headers=world.pi)
    world.api.post(f"{API}/jobs/{waiting['id']}/cancel", headers=world.pi)
    world.run_loop_until(blocker["id"])
