"""The local executor isolating jobs (as root): each owner's jobs run as a system user of
their own, with real processes and real users (removed afterwards)."""

from __future__ import annotations

import contextlib
import datetime as dt
import grp
import os
import pwd
import random
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fabbrica.backends import LaunchRequest, RunState
from fabbrica.backends.isolation import (
    closed_dirs,
    ensure_user,
    python_problem,
    reach_problem,
    unavailable,
    user_name,
)
from fabbrica.backends.local import LocalExecutor
from tests.conftest import need_service


def launch(job_id: str, command: str, owner: int | None, **kw: Any) -> LaunchRequest:
    return LaunchRequest(
        run_tag=job_id,
        partition="local",
        gpus=1,
        nodes=1,
        time_limit=dt.timedelta(seconds=kw.pop("seconds", 60)),
        command=command,
        owner=owner,
        **kw,
    )


def wait_for(executor: LocalExecutor, job_id: str, timeout: float = 15) -> RunState:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = executor.poll([job_id])[0].state
        if state.finished:
            return state
        time.sleep(0.05)
    raise AssertionError(f"{job_id} still {state} after {timeout} s")


def group_members(pgid: int) -> list[tuple[int, int]]:
    """(pid, uid) of the live processes of a process group."""
    found = []
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
            uid = status.parent.stat().st_uid
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append((int(status.parent.name), uid))
    return found


@pytest.fixture
def owners() -> Iterator[tuple[int, int]]:
    """Two Fabbrica user ids no one else uses; their system users go away afterwards."""
    if unavailable() is not None:
        need_service(f"isolating jobs needs root: {unavailable()}")
    base = random.randrange(10_000_000, 90_000_000)
    yield base, base + 1
    for owner in (base, base + 1):
        subprocess.run(["userdel", user_name(owner)], capture_output=True, check=False)


@pytest.fixture
def root() -> Iterator[Path]:
    """A jobs root whose parents anyone may pass through, so every refusal seen below is
    the isolation's, not a closed parent's."""
    top = Path(tempfile.mkdtemp(prefix="fabbrica-iso-", dir="/tmp"))
    top.chmod(0o755)
    yield top / "jobs"
    shutil.rmtree(top, ignore_errors=True)


def test_a_job_runs_as_its_owners_user_with_no_groups_and_a_clean_env(
    owners: tuple[int, int], root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FABBRICA_BOOTSTRAP_TOKEN", "server-secret")
    local = LocalExecutor(root, gpus=2, isolate=True)
    owner = owners[0]
    local.submit(launch("j1", "id -u; id -g; id -G; env; touch outputs/made", owner))
    assert wait_for(local, "j1") is RunState.SUCCEEDED
    user = pwd.getpwnam(user_name(owner))
    assert user.pw_uid != 0 and user.pw_shell in ("/usr/sbin/nologin", "/bin/false")
    assert grp.getgrgid(user.pw_gid).gr_name == user_name(owner)
    log = (local.job_dir("j1") / "log").read_text()
    uid, gid, groups = log.splitlines()[:3]
    assert (int(uid), int(gid), groups.split()) == (user.pw_uid, user.pw_gid, [str(user.pw_gid)])
    assert "server-secret" not in log and "FABBRICA_BOOTSTRAP_TOKEN" not in log
    assert f"USER={user_name(owner)}" in log and "HOME=/root" not in log
    names = {line.split("=", 1)[0] for line in log.splitlines() if "=" in line}
    assert {n for n in names if n.startswith("FABBRICA_")} == {
        "FABBRICA_JOB_ID",
        "FABBRICA_NUM_GPUS",
        "FABBRICA_JOB_DIR",
        "FABBRICA_RUN",
    }
    directory = local.job_dir("j1")
    info = directory.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, user.pw_gid, 0o710)
    work = (directory / "work").stat()
    assert (work.st_uid, stat.S_IMODE(work.st_mode)) == (user.pw_uid, 0o700)
    assert (directory / "work" / "outputs" / "made").stat().st_uid == user.pw_uid
    run = (directory / "run.json").stat()
    assert run.st_uid == 0 and not run.st_mode & 0o022  # the job cannot rewrite its pid
    assert stat.S_IMODE(root.stat().st_mode) == 0o711  # others pass through, never list


def test_a_job_cannot_read_another_owners_job_or_the_files_around_it(
    owners: tuple[int, int], root: Path
) -> None:
    secret_db = root.parent / "fabbrica.db"
    secret_db.write_text("the database")
    secret_db.chmod(0o600)
    root.parent.chmod(0o711)  # as `fabbrica up` leaves its data directory
    local = LocalExecutor(root, gpus=2, isolate=True)
    local.submit(launch("a", "echo a-secret > outputs/secret.txt", owners[0]))
    assert wait_for(local, "a") is RunState.SUCCEEDED
    targets = [
        root / "a",
        root / "a" / "work" / "outputs" / "secret.txt",
        root,
        root.parent,
        secret_db,
        Path(f"/proc/{os.getpid()}/environ"),
    ]
    command = "; ".join(  # list a directory, read a file
        f"if {'ls' if t.is_dir() else 'cat'} {t} >/dev/null 2>err; then echo READ {t}; "
        f"else echo DENIED {t}: $(cat err); fi"
        for t in targets
    )
    own = "cat $FABBRICA_JOB_DIR/err >/dev/null && echo own-ok"
    local.submit(launch("b", f"{command}; {own}", owners[1]))
    assert wait_for(local, "b") is RunState.SUCCEEDED
    log = (local.job_dir("b") / "log").read_text()
    for target in targets:
        (line,) = [x for x in log.splitlines() if x.split(":")[0].endswith(f" {target}")]
        assert line.startswith(f"DENIED {target}") and "Permission denied" in line, log
    assert "a-secret" not in log
    assert "own-ok" in log  # its own directory it reaches by the same absolute path


def test_cancel_adoption_and_the_exit_code_work_across_uids(
    owners: tuple[int, int], root: Path
) -> None:
    first = LocalExecutor(root, gpus=4, isolate=True)
    first.submit(launch("short", "sleep 1; exit 5", owners[0]))
    first.submit(launch("long", "sleep 300 & sleep 300 & wait", owners[0]))
    try:
        time.sleep(0.3)
        run = first._run("long")
        assert run is not None
        uid = pwd.getpwnam(user_name(owners[0])).pw_uid
        assert {u for _, u in group_members(run["pid"])} == {uid}
        # as after kill -9 of the server: a new executor starts from the files
        second = LocalExecutor(root, gpus=4, isolate=True)
        states = {s.run_tag: s.state for s in second.adopt()}
        assert states == {"short": RunState.RUNNING, "long": RunState.RUNNING}
        assert wait_for(second, "short") is RunState.FAILED
        assert second.poll(["short"])[0].exit_code == 5  # the wrapper, as the job user, wrote it
        began = time.monotonic()
        assert second.cancel("long").state is RunState.CANCELLED
        assert time.monotonic() - began < 5
        assert group_members(run["pid"]) == []
    finally:  # whatever failed above, no process outlives the test (nor warns later)
        for proc in first._procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def test_a_job_cannot_hang_or_fool_the_executor_through_its_exit_file(
    owners: tuple[int, int], root: Path
) -> None:
    local = LocalExecutor(root, gpus=2, isolate=True)
    local.submit(launch("fifo", "mkfifo ../status/exit_code; sleep 2", owners[0]))
    local.submit(launch("link", "ln -s /etc/hostname ../status/exit_code; sleep 2", owners[0]))
    time.sleep(0.5)
    began = time.monotonic()
    states = [s.state for s in local.poll(["fifo", "link"])]
    assert time.monotonic() - began < 1  # a FIFO is never opened for a blocking read
    assert states == [RunState.RUNNING, RunState.RUNNING]
    assert wait_for(local, "fifo") is RunState.SUCCEEDED  # the wrapper's file replaces it
    assert wait_for(local, "link") is RunState.SUCCEEDED


def test_an_isolating_executor_needs_the_owner(owners: tuple[int, int], root: Path) -> None:
    local = LocalExecutor(root, gpus=2, isolate=True)
    with pytest.raises(ValueError, match="owner is missing"):
        local.submit(launch("x", "true", None))
    assert not (root / "x").exists()


def test_job_users_are_made_once_and_the_python_check_agrees_with_the_shell(
    owners: tuple[int, int],
) -> None:
    first = ensure_user(owners[0])
    assert ensure_user(owners[0]) == first
    assert first.name == f"fab-u{owners[0]}"
    problem = python_problem(first.uid, first.gid)
    shell = subprocess.run(
        ["/bin/sh", "-c", 'test -x "$1"', "sh", sys.executable],
        user=first.uid,
        group=first.gid,
        extra_groups=[],
        check=False,
    )
    assert (problem is None) == (shell.returncode == 0), problem
    if problem is not None:
        assert sys.executable in problem and ("chmod o+x" in problem or "readable" in problem)


def test_a_closed_parent_of_the_data_directory_is_named(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    (closed / "open").mkdir(parents=True)
    closed.chmod(0o700)
    problem = reach_problem(closed / "open" / "data")
    assert problem is not None and "chmod o+x" in problem
    assert str(closed) in closed_dirs([closed / "open" / "data"])
    assert f"{closed} " in problem.split("chmod o+x ")[1].replace(")", " ")
    closed.chmod(0o711)
    assert str(closed) not in closed_dirs([closed / "open" / "data"])
