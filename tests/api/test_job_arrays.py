"""Job arrays and batch submissions through the API, on both databases, with the real local
executor: one request queues many jobs, all or none."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from fabbrica.store.models import Job
from tests.api.helpers import API, assert_error, snapshot
from tests.api.test_jobs_api import World, spec, submit, world

__all__ = ["world"]  # the fixture, shared with the jobs API tests


def _array(run: str, array: str, **resources: Any) -> dict[str, Any]:
    return {**spec(run, **resources), "array": array}


def _jobs_in_db(w: World) -> int:
    with w.db.session() as s:
        return int(s.scalar(select(func.count()).select_from(Job)) or 0)


def test_an_array_queues_every_task_and_each_runs_with_its_index(world: World) -> None:
    made = submit(world, _array('echo "task $FABBRICA_ARRAY_INDEX"', "2-6:2,9"))
    assert made.status_code == 201, made.text
    first = made.json()
    assert first["array_id"] == first["id"] and first["array_index"] == 2
    tasks = world.api.get(
        f"{API}/jobs", params={"array_id": first["array_id"]}, headers=world.pi
    ).json()
    assert [t["array_index"] for t in tasks] == [2, 4, 6, 9]
    assert {t["array_id"] for t in tasks} == {first["id"]}
    assert all(t["state"] == "queued" for t in tasks)
    for task in tasks:
        done = world.run_loop_until(task["id"])
        assert done["state"] == "succeeded", done
        log = world.api.get(f"{API}/jobs/{task['id']}/logs", headers=world.pi).text
        assert log.strip() == f"task {task['array_index']}"
    # a plain job is no array
    plain = submit(world, spec("true")).json()
    assert plain["array_id"] is None and plain["array_index"] is None


def test_an_arrays_worst_case_is_all_its_tasks_together(world: World) -> None:
    # 5 minutes x 1 GPU = 1/12 GPU-hour a task; the allocation holds 10 GPU-hours
    fits = submit(world, _array("true", "1-100"))
    assert fits.status_code == 201, fits.text
    before = snapshot(world.db)
    refused = submit(world, _array("true", "1-200"))
    assert_error(refused, 422, "invalid", "array")
    assert "200 tasks" in refused.json()["error"]["message"], refused.text
    assert snapshot(world.db) == before


def test_a_bad_array_is_refused_naming_the_field(world: World) -> None:
    before = snapshot(world.db)
    for bad in ("5-1", "1-20000", "0-15%4", "a-b", ""):
        r = submit(world, _array("true", bad))
        assert_error(r, 422, "invalid", "spec.array")
    assert snapshot(world.db) == before


def test_cancelling_an_array_stops_every_unfinished_task_of_it_only(world: World) -> None:
    first = submit(world, _array("sleep 30", "1-4")).json()
    other = submit(world, _array("sleep 30", "1-2")).json()
    tasks = world.api.get(f"{API}/jobs", params={"array_id": first["id"]}, headers=world.pi)
    last = tasks.json()[-1]["id"]
    cancelled = world.api.post(f"{API}/jobs/{last}/cancel-array", headers=world.pi)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json() == {"array_id": first["id"], "cancelled": 4, "stopping": 0}
    states = world.api.get(f"{API}/jobs", params={"array_id": first["id"]}, headers=world.pi)
    assert {t["state"] for t in states.json()} == {"cancelled"}
    untouched = world.api.get(f"{API}/jobs", params={"array_id": other["id"]}, headers=world.pi)
    assert {t["state"] for t in untouched.json()} == {"queued"}
    again = world.api.post(f"{API}/jobs/{last}/cancel-array", headers=world.pi)
    assert again.json()["cancelled"] == 0
    plain = submit(world, spec("true")).json()
    assert_error(
        world.api.post(f"{API}/jobs/{plain['id']}/cancel-array", headers=world.pi),
        409,
        "conflict",
        "job_id",
    )


def test_another_tenant_neither_sees_nor_cancels_an_array(world: World) -> None:
    first = submit(world, _array("true", "1-3")).json()
    seen = world.api.get(f"{API}/jobs", params={"array_id": first["id"]}, headers=world.other)
    assert seen.status_code == 200 and seen.json() == []
    refused = world.api.post(f"{API}/jobs/{first['id']}/cancel-array", headers=world.other)
    assert_error(refused, 404, "not_found", "job_id")
    mine = world.api.get(f"{API}/jobs", params={"array_id": first["id"]}, headers=world.pi)
    assert {t["state"] for t in mine.json()} == {"queued"}


def test_a_batch_is_queued_whole_or_not_at_all(world: World) -> None:
    body = {"jobs": [{"spec": spec(f"echo {n}"), "project": world.project} for n in range(5)]}
    made = world.api.post(f"{API}/job-batches", headers=world.pi, json=body)
    assert made.status_code == 201, made.text
    assert [j["state"] for j in made.json()] == ["queued"] * 5
    assert len({j["id"] for j in made.json()}) == 5
    count = _jobs_in_db(world)
    before = snapshot(world.db)
    bad = {
        "jobs": [
            {"spec": spec("true"), "project": world.project},
            {"spec": spec("true"), "project": world.project},
            {"spec": spec("true", gpus=99), "project": world.project},
        ]
    }
    refused = world.api.post(f"{API}/job-batches", headers=world.pi, json=bad)
    assert_error(refused, 422, "invalid", "jobs.2.resources")
    yaml_bad = {"jobs": [{"spec": "name: x\nrun: true\nresources: {gpus: 0}\n"}]}
    refused = world.api.post(f"{API}/job-batches", headers=world.pi, json=yaml_bad)
    assert_error(refused, 422, "invalid", "jobs.0.spec.resources.gpus")
    others = {"jobs": [{"spec": spec("true"), "project": world.project}]}
    refused = world.api.post(f"{API}/job-batches", headers=world.other, json=others)
    assert refused.status_code in (403, 404), refused.text
    assert snapshot(world.db) == before and _jobs_in_db(world) == count
    too_many = {"jobs": [{"spec": spec("true")}] * 1001}
    assert world.api.post(f"{API}/job-batches", headers=world.pi, json=too_many).status_code == 422
