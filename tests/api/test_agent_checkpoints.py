"""Checkpoints that follow a job across factories, through the agent API: a run's agent
sends its checkpoint folder in parts (checked whole against its SHA-256, and only from the
factory and run that hold the job), and the job's next run, lost and placed elsewhere, is
launched with it to download."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import re
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import httpx
from fastapi.testclient import TestClient

from fabbrica.agent.client import AgentClient
from fabbrica.agent.loop import Agent
from fabbrica.backends.local import LocalExecutor
from fabbrica.services import checkpoints
from fabbrica.store.models import JobLoss, UsageRecord
from tests.api.helpers import API
from tests.api.test_agents_api import LEASE, World, run, world

__all__ = ["world"]  # test_agents_api.py's: two agents' factories, the control loop in the test


def submit(w: World) -> int:
    spec = {
        "name": "ckpt",
        "run": "echo hi",
        "resources": {"time_limit": "10m", "gpus": 1, "gpu_model": "gh200"},
        "checkpoint": {"dir": "ckpt/", "every": "1m", "grace": "10s"},
        "resume": True,
    }
    r = w.api.post(f"{API}/jobs", headers=w.user, json={"spec": spec})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def folder_tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def send(w: World, factory: str, job_id: int, data: bytes, **params: Any) -> Any:
    return w.api.post(
        f"{API}/agent/jobs/{job_id}/checkpoint",
        params=params,
        content=data,
        headers={**w.agents[factory], "Content-Type": "application/octet-stream"},
    )


def test_a_checkpoint_sent_in_parts_follows_the_lost_job_to_its_next_run(world: World) -> None:
    w = world
    w.sync("jaif")
    job_id = submit(w)
    w.dispatcher.step()
    first = w.sync("jaif")["launch"]
    assert [o["checkpoint"]["archive"] for o in first] == [None]  # nothing kept yet
    w.sync("jaif", [run(job_id, "running", site_job_id="7")])

    data = folder_tar({"step": b"41\n", "weights.bin": bytes(range(256)) * 1024})
    sha = hashlib.sha256(data).hexdigest()
    whole = {"run": 1, "size": len(data), "sha256": sha}
    half = len(data) // 2
    r = send(w, "jaif", job_id, data[:half], offset=0, **whole)
    assert r.status_code == 200 and r.json() == {"received": half, "stored": False}, r.text
    # a part past what the server has, another factory, a run that is not the job's: refused
    assert send(w, "jaif", job_id, data[half + 1 :], offset=half + 1, **whole).status_code == 409
    assert send(w, "it4lia", job_id, data[half:], offset=half, **whole).status_code == 404
    assert (
        send(w, "jaif", job_id, data[half:], offset=half, **{**whole, "run": 2}).status_code == 409
    )
    bad = {**whole, "sha256": "0" * 64}
    assert send(w, "jaif", job_id, data, offset=0, **bad).status_code == 409  # does not match
    assert (
        w.api.get(f"{API}/agent/jobs/{job_id}/checkpoint", headers=w.agents["jaif"]).status_code
        == 404
    )
    r = send(w, "jaif", job_id, data[half:], offset=half, **whole)  # goes on where it stopped
    assert r.status_code == 200 and r.json() == {"received": len(data), "stored": True}, r.text

    # jaif goes quiet past the lease: the job is lost and waits again; its run at jaif can
    # no longer replace the checkpoint
    w.clock.advance(seconds=LEASE.total_seconds() + 1)
    w.dispatcher.step()
    assert w.job(job_id)["state"] == "queued"
    assert send(w, "jaif", job_id, data, offset=0, **whole).status_code == 404
    with w.db.session() as s:
        (loss,) = s.query(JobLoss).all()
        assert (loss.run, loss.site_job_id, loss.factory_id) == (1, "7", "jaif")

    # back, it is placed again: its second run is launched with the checkpoint to download
    w.sync("jaif")
    w.dispatcher.step()
    (launch,) = w.sync("jaif")["launch"]
    assert launch["run"] == 2
    assert launch["checkpoint"]["archive"] == f"/api/v1/agent/jobs/{job_id}/checkpoint"
    assert launch["checkpoint"]["sha256"] == sha
    got = w.api.get(launch["checkpoint"]["archive"], headers=w.agents["jaif"])
    assert got.status_code == 200 and got.content == data
    assert got.headers["x-checkpoint-sha256"] == sha
    assert send(w, "jaif", job_id, data, offset=0, **whole).status_code == 409  # run 1 is over


# --- two agents running the local backend: the folder goes from one to the other ----------

RESUMING = """\
f="$FABBRICA_CHECKPOINT_DIR/step"; s=0; stop=1000000
if [ -f "$f" ]; then s=$(cat "$f"); stop=$((s + 3)); echo "resumed from step $s"; fi
while [ "$s" -lt "$stop" ]; do
  s=$((s + 1)); echo "$s" > "$f.new"; mv "$f.new" "$f"; echo "step $s"; sleep 0.05
done
"""


def agent_of(w: World, factory: str, root: Path, partition: str, model: str) -> Agent:
    token = w.agents[factory]["Authorization"].removeprefix("Bearer ")
    http = TestClient(w.api.app)  # a client of its own: AgentClient sets its token on it
    client = AgentClient("http://testserver", token, http=cast("httpx.Client", http))
    executor = LocalExecutor(root / factory, gpus=4, gpu_model=model, partition=partition)
    return Agent(client, executor, backend="local", interval=0.01, work_dir=root / f"{factory}-a")


def until(what: str, probe: Callable[[], Any], agent: Agent, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert agent.round().ok
        if found := probe():
            return found
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


def kept_step(w: World, job_id: int) -> int:
    kept = checkpoints.stored(w.ctx.files, job_id)
    if kept is None:
        return 0
    with tarfile.open(kept.path) as tar:
        member = tar.extractfile("step")
        return int(member.read()) if member is not None else 0


def test_a_run_lost_with_its_site_resumes_at_another_from_what_its_agent_sent(
    world: World, tmp_path: Path
) -> None:
    w = world
    jaif = agent_of(w, "jaif", tmp_path, "booster", "gh200")
    it4lia = agent_of(w, "it4lia", tmp_path, "boost_usr_prod", "a100")
    assert jaif.round().ok
    spec = {
        "name": "counter",
        "run": RESUMING,
        "resources": {"time_limit": "10m", "gpus": 1},
        "placement": {"factories": ["jaif", "it4lia"]},
        "checkpoint": {"dir": "ckpt/", "every": "1m", "grace": "10s"},
        "resume": True,
    }
    r = w.api.post(f"{API}/jobs", headers=w.user, json={"spec": spec})
    job_id = int(r.json()["id"])
    w.dispatcher.step()
    assert w.job(job_id)["factory"] == "jaif"
    # while it runs, jaif's agent sends the folder as it changes
    sent = until("step 5 on the server", lambda: (k := kept_step(w, job_id)) >= 5 and k, jaif)
    try:
        # jaif goes quiet past the lease (its agent no longer syncs): lost, placed at it4lia
        w.clock.advance(seconds=LEASE.total_seconds() + 1)
        w.dispatcher.step()
        assert w.job(job_id)["state"] == "queued"
        assert it4lia.round().ok
        w.dispatcher.step()
        assert w.job(job_id)["factory"] == "it4lia"
        done = until("the job to succeed", lambda: (j := w.job(job_id))["state"] == "succeeded"
                     and j, it4lia)  # fmt: skip
        assert done["factory"] == "it4lia"
        log = w.api.get(f"{API}/jobs/{job_id}/logs", headers=w.user).text
        start = int(re.findall(r"resumed from step (\d+)", log)[0])
        assert start >= sent, log  # from what jaif's agent last sent, not from 0
        assert re.findall(r"^step (\d+)$", log, re.M)[-3:] == [str(start + i) for i in (1, 2, 3)]
        assert kept_step(w, job_id) == start + 3  # its end sent its last folder first
    finally:
        jaif.executor.cancel(f"fab-{job_id}")


# --- deleted once the job is over (FABBRICA_CHECKPOINT_KEEP_DAYS) ------------------------------


def store(w: World, job_id: int, run_no: int, files: dict[str, bytes]) -> None:
    data = folder_tar(files)
    whole = {"run": run_no, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    r = send(w, "jaif", job_id, data, offset=0, **whole)
    assert r.status_code == 200 and r.json()["stored"], r.text


def launched_at_jaif(w: World, job_id: int, run_no: int) -> None:
    w.sync("jaif")
    w.dispatcher.step()
    (launch,) = w.sync("jaif")["launch"]
    assert (launch["run_tag"], launch["run"]) == (f"fab-{job_id}", run_no)
    w.sync("jaif", [run(job_id, "running", site_job_id=str(run_no))])


def sweep(w: World, days: float = 0) -> list[int]:
    with w.db.session() as s:
        return checkpoints.sweep(s, w.ctx.files, w.clock(), dt.timedelta(days=days))


def test_a_jobs_checkpoint_is_deleted_once_it_is_over_and_kept_while_it_resumes(
    world: World,
) -> None:
    w = world
    assert w.ctx.files is not None
    job_id = submit(w)
    launched_at_jaif(w, job_id, 1)
    store(w, job_id, 1, {"step": b"10\n"})
    kept = checkpoints.folder(w.ctx.files, job_id)

    # its first run reaches its time limit: queued again to resume, the checkpoint stays
    w.sync("jaif", [run(job_id, "timed_out", site_job_id="1", gpus=1, elapsed_s=60)])
    assert (w.job(job_id)["state"], w.job(job_id)["run"]) == ("queued", 2)
    assert sweep(w) == [] and checkpoints.stored(w.ctx.files, job_id) is not None

    # placed there again, its agent reports the ended run once more: stale, not the
    # second run's end (charged once, not queued again)
    w.sync("jaif")
    w.dispatcher.step()
    assert w.job(job_id)["state"] == "dispatched"
    w.sync("jaif", [run(job_id, "timed_out", site_job_id="1", gpus=1, elapsed_s=60)])
    assert (w.job(job_id)["state"], w.job(job_id)["run"]) == ("dispatched", 2)
    with w.db.session() as s:
        assert s.query(UsageRecord).filter_by(job_id=job_id).count() == 1

    # its second run succeeds: over for good, the checkpoint goes (the folder too)
    launched_at_jaif(w, job_id, 2)
    store(w, job_id, 2, {"step": b"20\n"})
    assert sweep(w) == []  # running: kept
    w.sync("jaif", [run(job_id, "succeeded", site_job_id="2", gpus=1, elapsed_s=30)])
    assert w.job(job_id)["state"] == "succeeded"
    data = folder_tar({"step": b"21\n"})
    late = {"run": 2, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert send(w, "jaif", job_id, data, offset=0, **late).status_code == 409  # it is over
    assert sweep(w) == [job_id]
    assert not kept.exists() and checkpoints.stored(w.ctx.files, job_id) is None
    assert sweep(w) == []
    got = w.api.get(f"{API}/agent/jobs/{job_id}/checkpoint", headers=w.agents["jaif"])
    assert got.status_code == 404


def test_with_a_retention_a_checkpoint_is_kept_that_many_days_after_the_job_ended(
    world: World,
) -> None:
    w = world
    assert w.ctx.files is not None
    cancelled = submit(w)
    launched_at_jaif(w, cancelled, 1)
    store(w, cancelled, 1, {"step": b"5\n"})
    assert w.api.post(f"{API}/jobs/{cancelled}/cancel", headers=w.user).status_code == 200
    w.sync("jaif", [run(cancelled, "cancelled", site_job_id="1", gpus=1, elapsed_s=5)])
    assert w.job(cancelled)["state"] == "cancelled"
    (checkpoints.folder(w.ctx.files, 999_999)).mkdir(parents=True)  # no such job

    assert sweep(w, days=2) == [999_999]  # the job's stays 2 days after its end
    assert checkpoints.stored(w.ctx.files, cancelled) is not None
    w.clock.advance(seconds=2 * 86400 - 60)
    assert sweep(w, days=2) == []
    w.clock.advance(seconds=120)
    assert sweep(w, days=2) == [cancelled]
    assert not checkpoints.folder(w.ctx.files, cancelled).exists()


def test_the_control_loop_step_sweeps_at_most_every_interval(world: World) -> None:
    w = world
    assert w.ctx.files is not None
    step = checkpoints.CheckpointSweep(w.db, w.ctx.files, w.clock, dt.timedelta(0), every=3600)
    assert step() == 0  # no checkpoints at all yet
    for ghost in (999_998, 999_999):
        (checkpoints.folder(w.ctx.files, ghost)).mkdir(parents=True)
        assert step() == (1 if ghost == 999_998 else 0)  # the second waits for the interval
    assert checkpoints.folder(w.ctx.files, 999_999).exists()
    assert checkpoints.CheckpointSweep(w.db, w.ctx.files, w.clock, dt.timedelta(0))() == 1


# --- the checkpoint's download does not hold the agent's round -----------------------------


class GatedClient(AgentClient):
    """The agent's real client, whose checkpoint downloads wait until the test opens the
    gate (a large checkpoint on a slow link)."""

    gate = threading.Event()

    def download(self, api_path: str, dest: Path) -> Path:
        if api_path.endswith("/checkpoint"):
            assert self.gate.wait(120), "the gate was never opened"
        return super().download(api_path, dest)


def test_a_checkpoint_downloads_in_the_background_while_the_round_launches_the_others(
    world: World, tmp_path: Path
) -> None:
    w = world
    # job `resumed`: its first run at jaif sent a checkpoint, then jaif went quiet: lost
    w.sync("jaif")
    resumed = submit(w)
    launched_at_jaif(w, resumed, 1)
    store(w, resumed, 1, {"step": b"41\n"})
    w.clock.advance(seconds=LEASE.total_seconds() + 1)
    w.dispatcher.step()
    assert (w.job(resumed)["state"], w.job(resumed)["run"]) == ("queued", 2)

    # jaif's agent is back; a second job, with no checkpoint, is placed there too
    token = w.agents["jaif"]["Authorization"].removeprefix("Bearer ")
    http = TestClient(w.api.app)
    client = GatedClient("http://testserver", token, http=cast("httpx.Client", http))
    GatedClient.gate = threading.Event()
    executor = LocalExecutor(tmp_path / "jaif", gpus=4, gpu_model="gh200", partition="booster")
    agent = Agent(client, executor, backend="local", interval=0.01, work_dir=tmp_path / "a")
    assert agent.round().ok
    plain = w.submit(gpus=1, gpu_model="gh200")
    w.dispatcher.step()
    assert {w.job(j)["state"] for j in (resumed, plain)} == {"dispatched"}
    try:
        # a round while the checkpoint cannot arrive: it launches the other job and ends
        done: list[Any] = []
        thread = threading.Thread(target=lambda: done.append(agent.round()), daemon=True)
        thread.start()
        thread.join(60)
        assert not thread.is_alive(), "the round waited for the checkpoint's download"
        assert done[0].ok and done[0].launched == [f"fab-{plain}"], done
        assert f"fab-{resumed}" not in agent.held
        assert agent.round().launched == []  # offered again, still downloading: not twice
        assert w.job(resumed)["state"] == "dispatched"  # its lease renewed by the offers

        # once it is here, the run is launched from it
        GatedClient.gate.set()
        until("the resumed run to start", lambda: f"fab-{resumed}" in agent.held, agent)
        folder = executor.job_dir(f"fab-{resumed}") / "work" / "ckpt"
        assert (folder / "step").read_bytes() == b"41\n"
        kept = tmp_path / "a" / "checkpoints"  # unpacked, then gone (just after the launch)
        until("the archive to be removed", lambda: not list(kept.glob("*.tar")), agent)
    finally:
        GatedClient.gate.set()
        for job_id in (resumed, plain):
            executor.cancel(f"fab-{job_id}")


def test_a_download_whose_run_is_no_longer_offered_is_dropped(world: World, tmp_path: Path) -> None:
    w = world
    w.sync("jaif")
    job_id = submit(w)
    launched_at_jaif(w, job_id, 1)
    store(w, job_id, 1, {"step": b"7\n"})
    w.clock.advance(seconds=LEASE.total_seconds() + 1)
    w.dispatcher.step()
    token = w.agents["jaif"]["Authorization"].removeprefix("Bearer ")
    client = GatedClient(
        "http://testserver", token, http=cast("httpx.Client", TestClient(w.api.app))
    )
    GatedClient.gate = threading.Event()
    executor = LocalExecutor(tmp_path / "jaif", gpus=4, gpu_model="gh200", partition="booster")
    agent = Agent(client, executor, backend="local", interval=0.01, work_dir=tmp_path / "a")
    assert agent.round().ok
    w.dispatcher.step()
    assert agent.round().launched == []  # downloading
    fetch = agent.checkpoints.fetching[f"fab-{job_id}"]

    # cancelled meanwhile: no longer offered, its download is dropped and its file removed
    assert w.api.post(f"{API}/jobs/{job_id}/cancel", headers=w.user).status_code == 200
    w.dispatcher.step()
    assert w.job(job_id)["state"] == "cancelled"
    assert agent.round().ok
    assert agent.checkpoints.fetching == {}
    GatedClient.gate.set()
    assert fetch.done.wait(60)
    assert not fetch.dest.exists()
    assert f"fab-{job_id}" not in agent.held
