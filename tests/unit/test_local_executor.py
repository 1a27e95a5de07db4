"""The local executor with real processes: GPUs, files, cancel, time limit, adoption."""

from __future__ import annotations

import datetime as dt
import io
import json
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from fabbrica.backends import Capacity, Executor, LaunchRequest, RunState
from fabbrica.backends.local import LocalExecutor


def launch(
    run_tag: str, command: str, gpus: int = 1, seconds: float = 60, nodes: int = 1, **kw: Any
) -> LaunchRequest:
    return LaunchRequest(
        run_tag=run_tag,
        partition="local",
        gpus=gpus,
        nodes=nodes,
        time_limit=dt.timedelta(seconds=seconds),
        command=command,
        **kw,
    )


def live_members(group: int) -> list[int]:
    """Processes of a process group that have not ended (zombies do not count)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def wait_for(executor: LocalExecutor, run_tag: str, timeout: float = 15) -> RunState:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = executor.poll([run_tag])[0].state
        if state.finished:
            return state
        time.sleep(0.05)
    raise AssertionError(f"{run_tag} still {state} after {timeout} s")


@pytest.fixture
def local(tmp_path: Path) -> LocalExecutor:
    return LocalExecutor(tmp_path / "jobs", gpus=4)


def test_it_is_an_executor(local: LocalExecutor) -> None:
    """Driven only through the `Executor` protocol (mypy checks the signatures: tests are
    strict), it keeps the contract's promises, which isinstance on a Protocol never looks at."""
    executor: Executor = local
    assert executor.name == "local" and executor.capabilities() == frozenset()
    assert executor.capacity() == [Capacity("local", "emulated", 4, 4)]
    try:
        first = executor.submit(launch("c1", "sleep 300", gpus=3))
        assert (first.run_tag, first.state) == ("c1", RunState.RUNNING)
        again = executor.submit(launch("c1", "sleep 300", gpus=3))  # idempotent: one run
        assert (again.run_tag, again.state) == ("c1", RunState.RUNNING)
        assert executor.capacity()[0].free_gpus == 1
        polled = executor.poll(["c1", "nobody"])
        assert [(s.run_tag, s.state) for s in polled] == [
            ("c1", RunState.RUNNING),
            ("nobody", RunState.UNKNOWN),
        ]
        assert [(s.run_tag, s.state) for s in executor.adopt()] == [("c1", RunState.RUNNING)]
    finally:
        cancelled = executor.cancel("c1")
    assert cancelled.state is RunState.CANCELLED
    assert executor.poll(["c1"])[0].state is RunState.CANCELLED
    assert executor.capacity()[0].free_gpus == 4
    (usage,) = executor.usage(["c1", "nobody"])
    assert (usage.run_tag, usage.gpus) == ("c1", 3)


def test_a_job_runs_with_its_gpus_env_and_directory(local: LocalExecutor, tmp_path: Path) -> None:
    archive = tmp_path / "work.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        data = b"print('hello from train.py')\n"
        info = tarfile.TarInfo("train.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    command = (
        'python3 train.py && echo "$CUDA_VISIBLE_DEVICES|$FABBRICA_NUM_GPUS|$EPOCHS" '
        "&& echo model > outputs/model.txt"
    )
    status = local.submit(
        launch("j1", command, gpus=2, env={"EPOCHS": "3"}, workdir_archive=str(archive))
    )
    assert status.state is RunState.RUNNING
    assert local.capacity()[0].free_gpus == 2
    assert wait_for(local, "j1") is RunState.SUCCEEDED
    final = local.poll(["j1"])[0]
    assert final.exit_code == 0 and final.ended_at is not None
    log = (local.job_dir("j1") / "log").read_text()
    assert "hello from train.py" in log and "0,1|2|3" in log
    assert (local.job_dir("j1") / "work" / "outputs" / "model.txt").read_text() == "model\n"
    assert local.capacity()[0].free_gpus == 4
    (usage,) = local.usage(["j1"])
    assert usage.gpus == 2 and usage.elapsed.total_seconds() >= 0


def test_failure_keeps_the_exit_code(local: LocalExecutor) -> None:
    local.submit(launch("f", "exit 3"))
    assert wait_for(local, "f") is RunState.FAILED
    assert local.poll(["f"])[0].exit_code == 3


def test_cancel_stops_the_whole_process_group_fast(local: LocalExecutor) -> None:
    local.submit(launch("c", "sleep 300 & sleep 300 & wait"))
    time.sleep(0.3)
    began = time.monotonic()
    status = local.cancel("c")
    assert time.monotonic() - began < 5
    assert status.state is RunState.CANCELLED
    run = local._run("c")
    assert run is not None
    assert len(live_members(run["pid"])) == 0  # nothing of the group is left


def test_time_limit_ends_timed_out(local: LocalExecutor) -> None:
    local.submit(launch("t", "sleep 300", seconds=1))
    assert wait_for(local, "t") is RunState.TIMED_OUT


def test_a_restarted_executor_adopts_running_and_finished_jobs(tmp_path: Path) -> None:
    first = LocalExecutor(tmp_path / "jobs", gpus=2)
    first.submit(launch("done", "true"))
    first.submit(launch("slow", "sleep 1; exit 7"))
    wait_for(first, "done")
    # as after kill -9: the processes live on and a new executor starts from the files
    second = LocalExecutor(tmp_path / "jobs", gpus=2)
    states = {s.run_tag: s.state for s in second.adopt()}
    assert states == {"done": RunState.SUCCEEDED, "slow": RunState.RUNNING}
    assert second.capacity()[0].free_gpus == 1
    assert second.submit(launch("slow", "echo twice >> ran")).state is RunState.RUNNING
    assert wait_for(second, "slow") is RunState.FAILED  # the original run, not a second one
    assert second.poll(["slow"])[0].exit_code == 7
    assert not (second.job_dir("slow") / "work" / "ran").exists()
    for proc in first._procs.values():  # reap what the first executor started
        proc.wait(5)


def test_a_run_whose_pid_a_crash_left_unrecorded_is_found_by_its_own(tmp_path: Path) -> None:
    first = LocalExecutor(tmp_path / "jobs", gpus=2)
    first.submit(launch("slow", "sleep 1; exit 7"))
    run_json = first.job_dir("slow") / "run.json"

    def forget_pid() -> None:  # as after kill -9 between starting the job and recording it
        run_json.write_text(json.dumps({**json.loads(run_json.read_text()), "pid": None}))

    forget_pid()
    second = LocalExecutor(tmp_path / "jobs", gpus=2)
    assert [s.state for s in second.adopt()] == [RunState.RUNNING]
    assert json.loads(run_json.read_text())["pid"] is not None  # recorded now
    assert wait_for(second, "slow") is RunState.FAILED and second.poll(["slow"])[0].exit_code == 7
    forget_pid()  # and had it never started at all:
    for name in ("exit_code", "exit_code.pid"):
        (second.job_dir("slow") / name).unlink()
    status = LocalExecutor(tmp_path / "jobs", gpus=2).poll(["slow"])[0]
    assert status.state is RunState.RUNNING and status.reason == "starting"  # for a while
    for proc in first._procs.values():
        proc.wait(5)


def test_refusals(local: LocalExecutor, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="single-node"):
        local.submit(launch("m", "true", nodes=2))
    with pytest.raises(ValueError, match="5 GPUs asked"):
        local.submit(launch("g", "true", gpus=5))
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(tarfile.TarError):
        local.submit(launch("e", "true", workdir_archive=str(evil)))
    assert not (local.root / "e" / "escape.txt").exists()
    assert local.poll(["nobody"])[0].state is RunState.UNKNOWN
