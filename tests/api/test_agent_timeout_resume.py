"""A run that reaches its time limit with `resume: true`, its job placed again at the same
factory: the agent reports the run that ended once more (its report of it is still in
hand when the next run is placed) and that report is the old run's, never the new one's
end (it was charged already: its usage record names that factory and site job). Found on
the Slurm testbed (tests/slurm/test_ddp.py): the old report was charged a second time as
the new run's, the usage record's (factory, site job id) was taken and every later sync of
that agent answered 500."""

from __future__ import annotations

from typing import Any

from fabbrica.store.models import UsageRecord
from tests.api.helpers import API
from tests.api.test_agents_api import World, run, world

__all__ = ["world"]  # test_agents_api.py's: two agents' factories, the control loop in the test


def submit(w: World) -> int:
    spec = {
        "name": "resuming",
        "run": "echo hi",
        "resources": {"time_limit": "10m", "gpus": 1, "gpu_model": "gh200"},
        "checkpoint": {"dir": "ckpt/", "every": "1m", "grace": "10s"},
        "resume": True,
    }
    r = w.api.post(f"{API}/jobs", headers=w.user, json={"spec": spec})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def ended(job_id: int, site_job_id: str) -> dict[str, Any]:
    return run(job_id, "timed_out", site_job_id=site_job_id, elapsed_s=600, gpus=1,
               started_at="2026-12-01T07:00:00Z", ended_at="2026-12-01T07:10:00Z")  # fmt: skip


def records(w: World, job_id: int) -> list[tuple[int, str | None]]:
    with w.db.session() as session:
        rows = session.query(UsageRecord).filter(UsageRecord.job_id == job_id).all()
        return sorted((r.run, r.site_job_id) for r in rows)


def test_the_timed_out_runs_report_again_is_not_the_next_runs_end(world: World) -> None:
    w = world
    w.sync("jaif")
    job_id = submit(w)
    w.dispatcher.step()
    assert [o["run_tag"] for o in w.sync("jaif")["launch"]] == [f"fab-{job_id}"]
    w.sync("jaif", [run(job_id, "running", site_job_id="6")])
    w.sync("jaif", [ended(job_id, "6")])
    queued = w.job(job_id)
    assert queued["state"] == "queued" and "timed out at jaif" in queued["reason"], queued
    assert records(w, job_id) == [(1, "6")]

    w.dispatcher.step()  # placed at jaif again, for its second run
    assert w.job(job_id)["state"] == "dispatched"
    again = w.sync("jaif", [ended(job_id, "6")])  # run 1's end, still in the agent's hands
    assert [o["run_tag"] for o in again["launch"]] == [f"fab-{job_id}"]  # run 2 goes out
    assert w.job(job_id)["state"] == "dispatched"
    assert records(w, job_id) == [(1, "6")]  # charged once

    w.sync("jaif", [run(job_id, "running", site_job_id="7")])
    assert w.job(job_id)["state"] == "running"
    done = run(job_id, "succeeded", site_job_id="7", elapsed_s=60, gpus=1,
               started_at="2026-12-01T07:11:00Z", ended_at="2026-12-01T07:12:00Z")  # fmt: skip
    w.sync("jaif", [done])
    assert w.job(job_id)["state"] == "succeeded"
    assert records(w, job_id) == [(1, "6"), (2, "7")]
