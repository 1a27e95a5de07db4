"""Checkpoints and resume on the embedded local backend, with the real dispatcher: a job
that reaches its time limit with `resume: true` is warned (SIGUSR1) a grace period before,
saves, and goes on in a second run from that checkpoint; each run is charged once."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import select

from fabbrica.store.models import Allocation, Job, UsageRecord
from tests.api.helpers import API
from tests.api.test_jobs_api import World, world

__all__ = ["world"]  # the fixture, shared with the jobs API tests

# A job that counts steps, saves its step in $FABBRICA_CHECKPOINT_DIR when SIGUSR1 comes,
# and starts from the saved step. Only the standard library.
COUNTER = r"""
import json, os, signal, time
from pathlib import Path
saved = Path(os.environ["FABBRICA_CHECKPOINT_DIR"]) / "step.json"
step = json.loads(saved.read_text())["step"] if saved.exists() else 0
print(f"run {os.environ['FABBRICA_RUN']} starts at step {step}", flush=True)
asked = []
signal.signal(signal.SIGUSR1, lambda *_: asked.append(1))
while step < 50:
    step += 1
    if asked:
        asked.clear()
        saved.write_text(json.dumps({"step": step}))
        print(f"saved at step {step}", flush=True)
    time.sleep(0.1)
print(f"done at step {step}", flush=True)
"""


def counter_spec(resume: bool) -> dict[str, Any]:
    return {
        "name": "counter",
        "run": f"python3 - <<'EOF'\n{COUNTER}\nEOF",
        "resources": {"gpus": 2, "time_limit": "4s"},
        "checkpoint": {"dir": "ckpt/", "every": "10m", "grace": "2s"},
        "resume": resume,
    }


def submit(w: World, body: dict[str, Any]) -> dict[str, Any]:
    r = w.api.post(f"{API}/jobs", headers=w.pi, json={"spec": body, "project": w.project})
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_a_timed_out_job_saves_on_the_signal_and_resumes_from_it(world: World) -> None:
    job = submit(world, counter_spec(resume=True))
    done = world.run_loop_until(job["id"], timeout=60)
    assert done["state"] == "succeeded", done
    log = world.api.get(f"{API}/jobs/{job['id']}/logs", headers=world.pi).text
    starts = [int(n) for n in re.findall(r"run \d+ starts at step (\d+)", log)]
    saves = [int(n) for n in re.findall(r"saved at step (\d+)", log)]
    assert len(starts) >= 2 and starts[0] == 0, log
    assert saves and starts[1] == saves[0] > 0, log  # the counter goes on, not from 0
    assert "--- fabbrica: run 2 of this job ---" in log
    assert "done at step 50" in log
    assert done["run"] == len(starts)
    with world.db.session() as s:
        row = s.get(Job, job["id"])
        assert row is not None and row.run == len(starts)
        records = list(s.scalars(select(UsageRecord).where(UsageRecord.job_id == job["id"])))
        allocation = s.get(Allocation, world.allocation)
        assert allocation is not None
        assert sorted(r.run for r in records) == list(range(1, row.run + 1))  # once per run
        for record in records:
            assert record.gpus == 2 and 0 < record.elapsed_s < 10
            # the run's own time, also past its 4 s limit (the runner's check comes a
            # moment later): what the site counted, from what the allocation has left
            used = 2 * record.elapsed_s / 3600
            assert record.gpu_hours == pytest.approx(used, rel=1e-6)
        first = next(r for r in records if r.run == 1)
        assert first.elapsed_s >= 4  # the whole first run, up to its time limit
        total = sum(r.gpu_hours for r in records)
        assert done["gpu_hours"] == pytest.approx(total, rel=1e-9)
        assert allocation.used_gpu_hours == pytest.approx(total, rel=1e-9)
        assert allocation.reserved_gpu_hours == pytest.approx(0, abs=1e-9)
    usage = world.api.get(f"{API}/usage", headers=world.pi, params={"by": "factory"}).json()
    assert usage[0]["jobs"] == 1  # one job, however many runs


def test_without_resume_a_timed_out_job_stays_timed_out(world: World) -> None:
    job = submit(world, counter_spec(resume=False))
    done = world.run_loop_until(job["id"], timeout=30)
    assert done["state"] == "timed_out"
    log = world.api.get(f"{API}/jobs/{job['id']}/logs", headers=world.pi).text
    assert "saved at step" in log  # the warning came all the same
    with world.db.session() as s:
        row = s.get(Job, job["id"])
        assert row is not None and row.run == 1
