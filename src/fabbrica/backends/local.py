"""The local executor: jobs as process groups on this machine, with emulated GPUs.

Each job gets a directory `ROOT/<job id>/` holding `work/` (the unpacked workdir, where the
job runs, with an `outputs/` folder), `log` (stdout and stderr), `run.json` (written before
the process starts, then with its pid) and, when it ends, `exit_code`, written by a small
wrapper shell that outlives a crash of Fabbrica itself. A restarted executor finds every
job again from these files (`adopt`): running ones keep running, finished ones report
their exit code, nothing is started twice.

Isolated (`isolate=True`, when the server runs as root; see `backends.isolation`), a job
runs as its owner's system user `fab-u<id>` with no supplementary groups and a scrubbed
environment. Its directory is then `root:fab-u<id>` mode 0710: the job can enter it and
read its `log`, but only its `work/`, `status/` (where its wrapper writes `exit_code`) and
`tmp/` are its own (mode 0700); `run.json` and `ended`, which the executor trusts to stop
the right process, stay root's. Other users cannot enter the directory at all.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

from fabbrica.backends.isolation import JobUser, chown_tree, ensure_user
from fabbrica.core.executor import (
    Capability,
    Capacity,
    DataMount,
    LaunchRequest,
    RunState,
    RunStatus,
    UsageSample,
)

KILL_GRACE_S = 3.0
PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ", "USER")
ISOLATED_ENV = ("PATH", "LANG", "LC_ALL", "TZ")  # the rest is set for the job user
OWN_DIRS = ("work", "status", "tmp")  # what an isolated job owns in its directory
# The job's shell records its own pid first (`<exit file>.pid`): a server killed between
# starting it and writing run.json again leaves the run findable (see _recover_pid).
# SIGUSR1 (the warning before the time limit, sent to the whole group) must not end the
# wrapper itself: it traps it (the job's own processes get the default, or their handler).
_WRAPPER = (
    'trap : USR1; printf "%s" "$$" > "$2.pid"; bash -c "$1"; code=$?; '
    'printf "%s" "$code" > "$2.tmp"; mv "$2.tmp" "$2"'
)
REAP_WAIT_S = 2.0  # how long a finished run's wrapper may take to exit before it is reaped
STARTING_GRACE_S = 10.0  # a run.json without a pid this young may still be starting


class LocalExecutor:
    """Runs single-node jobs here; `gpus` emulated GPUs are handed out by index."""

    def __init__(
        self,
        root: Path,
        *,
        gpus: int,
        gpu_model: str = "emulated",
        name: str = "local",
        partition: str = "local",
        isolate: bool = False,
    ):
        self.name = name
        self.isolate = isolate  # run each job as its owner's system user (needs root)
        self.partition = partition
        self.root = root
        self.total = gpus
        self.gpu_model = gpu_model
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.RLock()  # one start per job, one GPU per job, at a time
        root.mkdir(parents=True, exist_ok=True)
        if isolate:
            _close_root(root)

    # --- Executor -----------------------------------------------------------------------

    def capabilities(self) -> frozenset[Capability]:
        return frozenset()  # one node, no containers, no preemption

    def capacity(self) -> list[Capacity]:
        used = sum(len(run["gpus"]) for run in self._live_runs())
        return [Capacity(self.partition, self.gpu_model, self.total, self.total - used)]

    def submit(self, request: LaunchRequest) -> RunStatus:
        with self._lock:
            return self._submit(request)

    def _submit(self, request: LaunchRequest) -> RunStatus:
        directory = self.root / request.run_tag
        before = self._run(request.run_tag)
        if before is not None and int(before.get("run", 1)) >= request.run:
            return self._status(request.run_tag)  # already started: never twice
        if (directory / "run.json").exists() and before is None:
            return self._status(request.run_tag)
        if request.nodes != 1:
            raise ValueError("the local executor runs single-node jobs only")
        user = self._job_user(request)
        if before is not None and not self._status(request.run_tag).state.finished:
            self._stop(request.run_tag, RunState.CANCELLED)  # a later run replaces it
        gpus = self._free_gpus(request.gpus)
        kept = None
        if before is not None:  # a later run of the job: the last one's files step aside
            kept = _archive_run(directory, request)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if user is not None:
            os.chown(directory, 0, user.gid)
            directory.chmod(0o710)
        work = directory / "work"
        (work / "outputs").mkdir(parents=True, exist_ok=True)
        if request.workdir_archive:
            _unpack(Path(request.workdir_archive), work)
        if request.datasets:
            _place_data(request.datasets, directory / "data")
        if request.checkpoint is not None:
            checkpoints = work / request.checkpoint.dir
            if kept is not None and kept.is_dir():
                shutil.rmtree(checkpoints, ignore_errors=True)  # the workdir's own, if any
                checkpoints.parent.mkdir(parents=True, exist_ok=True)
                os.replace(kept, checkpoints)
            if request.checkpoint.archive:  # the last one the server holds (any site's)
                shutil.rmtree(checkpoints, ignore_errors=True)
                checkpoints.mkdir(parents=True)
                _unpack(Path(request.checkpoint.archive), checkpoints)
            checkpoints.mkdir(parents=True, exist_ok=True)
        if user is not None:
            for own in OWN_DIRS:
                (directory / own).mkdir(exist_ok=True)
                chown_tree(directory / own, user)
                (directory / own).chmod(0o700)
        run: dict[str, Any] = {
            "run_tag": request.run_tag,
            "gpus": gpus,
            "time_limit": request.time_limit.total_seconds(),
            "started_at": time.time(),
            "pid": None,
            "user": user.name if user is not None else None,
            "exit_file": "status/exit_code" if user is not None else "exit_code",
            "run": request.run,
            "grace": request.checkpoint.grace_s if request.checkpoint is not None else None,
            "signalled": False,
        }
        _write_json(directory / "run.json", run)  # state first, then the side effect
        # an isolated job may not reach the directory's path from /: it names its exit
        # file from where it starts (work/)
        exit_file = "../status/exit_code" if user is not None else str(directory / "exit_code")
        command = request.command
        if request.checkpoint is not None:  # SIGUSR1 asks the job to save: its shells live on
            command = f"trap : USR1\n{command}"
        with (directory / "log").open("ab") as log:
            if request.run > 1:
                log.write(f"--- fabbrica: run {request.run} of this job ---\n".encode())
                log.flush()
            proc = subprocess.Popen(  # noqa: S603 - the job's own command, by design
                ["/bin/sh", "-c", _WRAPPER, "fabbrica-job", command, exit_file],
                cwd=work,
                env=_job_env(request, directory, gpus, user),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                user=user.uid if user is not None else None,
                group=user.gid if user is not None else None,
                extra_groups=[] if user is not None else None,
            )
        self._procs[request.run_tag] = proc
        run.update(pid=proc.pid, start_ticks=_start_ticks(proc.pid))
        _write_json(directory / "run.json", run)
        return self._status(request.run_tag)

    def _job_user(self, request: LaunchRequest) -> JobUser | None:
        """The system user an isolated job runs as (None: not isolated)."""
        if not self.isolate:
            return None
        if request.owner is None:
            raise ValueError("this factory isolates jobs: the job's owner is missing")
        return ensure_user(request.owner)

    def poll(self, run_tags: list[str]) -> list[RunStatus]:
        return [self._status(run_tag) for run_tag in run_tags]

    def cancel(self, run_tag: str) -> RunStatus:
        with self._lock:
            return self._stop(run_tag, RunState.CANCELLED)

    def usage(self, run_tags: list[str]) -> list[UsageSample]:
        samples = []
        for run_tag in run_tags:
            status, run = self._status(run_tag), self._run(run_tag)
            if run is None or status.started_at is None:
                continue
            end = status.ended_at or dt.datetime.now(dt.UTC)
            samples.append(UsageSample(run_tag, len(run["gpus"]), end - status.started_at))
        return samples

    def adopt(self) -> list[RunStatus]:
        return [self._status(p.parent.name) for p in sorted(self.root.glob("*/run.json"))]

    # --- files and processes ------------------------------------------------------------

    def job_dir(self, run_tag: str) -> Path:
        return self.root / run_tag

    def _run(self, run_tag: str) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads((self.root / run_tag / "run.json").read_text())
        except (OSError, ValueError):
            return None
        return data

    def _status(self, run_tag: str) -> RunStatus:
        run = self._run(run_tag)
        if run is None:
            return RunStatus(run_tag, RunState.UNKNOWN)
        directory = self.root / run_tag
        if run["pid"] is None:  # after a launch in progress, if one is
            with self._lock:
                run = self._run(run_tag) or run
                if run["pid"] is None:
                    run = self._recover_pid(directory, run)
        started = dt.datetime.fromtimestamp(run["started_at"], dt.UTC)
        ended_as = _read(directory / "ended")
        exit_path = _exit_path(directory, run)
        exit_text = _read_small(exit_path)
        alive = self._alive(run_tag, run)
        if exit_text is not None or (ended_as is not None and not alive):
            self._reap(run_tag)
            return self._finished(run_tag, started, ended_as, exit_text, exit_path)
        if alive and ended_as is not None:  # being stopped; the next poll sees it end
            return RunStatus(run_tag, RunState.RUNNING, started, reason=f"stopping: {ended_as}")
        if alive:
            elapsed = time.time() - run["started_at"]
            if elapsed > run["time_limit"]:
                return self._stop(run_tag, RunState.TIMED_OUT)
            grace = run.get("grace")
            if grace and not run.get("signalled") and elapsed > run["time_limit"] - grace:
                self._warn(run_tag, run)
            return RunStatus(run_tag, RunState.RUNNING, started_at=started)
        if run["pid"] is None:  # crashed between writing run.json and starting
            if time.time() - run["started_at"] < STARTING_GRACE_S:
                return RunStatus(run_tag, RunState.RUNNING, started, reason="starting")
            return RunStatus(run_tag, RunState.FAILED, started, started, None, "never started")
        return RunStatus(
            run_tag,
            RunState.FAILED,
            started,
            _mtime(directory / "log"),
            None,
            "the job's process ended without an exit code",
        )

    def _finished(
        self,
        run_tag: str,
        started: dt.datetime,
        ended_as: str | None,
        exit_text: str | None,
        exit_path: Path,
    ) -> RunStatus:
        directory = self.root / run_tag
        code = int(exit_text) if exit_text and exit_text.strip().lstrip("-").isdigit() else None
        ended = _mtime(directory / "ended" if ended_as else exit_path)
        if ended_as:
            return RunStatus(run_tag, RunState(ended_as), started, ended, code)
        state = RunState.SUCCEEDED if code == 0 else RunState.FAILED
        return RunStatus(run_tag, state, started, ended, code)

    def _reap(self, run_tag: str) -> None:
        """Forget a finished run's process once it has exited (its wrapper exits right
        after writing the exit code): a child never waited for would stay a zombie, and
        its Popen warn when dropped."""
        proc = self._procs.get(run_tag)
        if proc is None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(REAP_WAIT_S)
            self._procs.pop(run_tag, None)

    def _alive(self, run_tag: str, run: dict[str, Any]) -> bool:
        proc = self._procs.get(run_tag)
        if proc is not None:
            return proc.poll() is None  # also reaps our own children
        pid = run.get("pid")
        return pid is not None and _start_ticks(pid) == run.get("start_ticks")

    def _recover_pid(self, directory: Path, run: dict[str, Any]) -> dict[str, Any]:
        """A run.json without a pid: the server died between starting the job and recording
        its pid. The job's shell wrote its pid itself; when that process still runs the
        wrapper, record it as the launch would have."""
        text = _read_small(Path(f"{_exit_path(directory, run)}.pid"))
        if text is None or not text.isdigit():
            return run
        pid = int(text)
        ticks = _start_ticks(pid)
        try:
            ours = b"fabbrica-job" in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            ours = False
        if ticks is None or not ours:
            return run
        run = {**run, "pid": pid, "start_ticks": ticks}
        _write_json(directory / "run.json", run)
        return run

    def _warn(self, run_tag: str, run: dict[str, Any]) -> None:
        """SIGUSR1 to the job's processes, once, its grace period before the time limit:
        time to save a checkpoint (as Slurm's `--signal=B:USR1@<grace>`)."""
        with self._lock:
            run = {**run, "signalled": True}
            _write_json(self.root / run_tag / "run.json", run)  # the record first
            with contextlib.suppress(ProcessLookupError):
                os.killpg(run["pid"], signal.SIGUSR1)

    def _stop(self, run_tag: str, state: RunState) -> RunStatus:
        run = self._run(run_tag)
        if run is None:
            return RunStatus(run_tag, RunState.UNKNOWN)
        directory = self.root / run_tag
        if _read_small(_exit_path(directory, run)) is None and _read(directory / "ended") is None:
            (directory / "ended").write_text(state.value)  # the record first, then the kill
            self._kill_group(run_tag, run)
        return self._status(run_tag)

    def _kill_group(self, run_tag: str, run: dict[str, Any]) -> None:
        pid = run.get("pid")
        if pid is None or not self._alive(run_tag, run):
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + KILL_GRACE_S
            while time.monotonic() < deadline:
                # the leader first (which reaps our own child), then every process it
                # started: a signal is delivered when the process next runs, and on a
                # busy machine a child can outlive its leader by a moment
                if not self._alive(run_tag, run) and not _group_alive(pid):
                    return
                time.sleep(0.05)

    def _live_runs(self) -> list[dict[str, Any]]:
        runs = []
        for path in self.root.glob("*/run.json"):
            run_tag = path.parent.name
            if self._status(run_tag).state in (RunState.RUNNING, RunState.PENDING):
                run = self._run(run_tag)
                if run is not None:
                    runs.append(run)
        return runs

    def _free_gpus(self, count: int) -> list[int]:
        used = {g for run in self._live_runs() for g in run["gpus"]}
        free = [g for g in range(self.total) if g not in used]
        if count > len(free):
            raise ValueError(f"{count} GPUs asked, {len(free)} of {self.total} free")
        return free[:count]


def _archive_run(directory: Path, request: LaunchRequest) -> Path | None:
    """Move the earlier runs' files to `runs/<n>/` (the log stays: it goes on) and return
    where the checkpoint folder of the last one now is (None: it kept none)."""
    into = directory / "runs" / str(request.run - 1)
    while into.exists():  # never over another run's files
        into = into.with_name(f"{into.name}+")
    into.mkdir(parents=True)
    # an isolated job's exit file is in status/, which moves whole
    for name in ("run.json", "ended", "exit_code", "exit_code.pid", "work", "status", "tmp"):
        source = directory / name
        if source.exists() or source.is_symlink():
            os.replace(source, into / name)
    data = directory / "data"
    if data.exists():  # read-only links to the server's copies: made again
        for folder, _, _ in os.walk(data):
            os.chmod(folder, 0o700)
        shutil.rmtree(data)
    if request.checkpoint is None:
        return None
    kept = into / "work" / request.checkpoint.dir
    return kept if kept.is_dir() else None


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group is still running (zombies have ended)."""
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks (/proc), to tell it from a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # a zombie has ended
        return None
    return int(fields[19])


def _job_env(
    request: LaunchRequest, directory: Path, gpus: list[int], user: JobUser | None
) -> dict[str, str]:
    """The job's environment: a few of the server's variables (never FABBRICA_* ones nor
    a token), the spec's, and what Fabbrica tells every job."""
    kept = PASSED_ENV if user is None else ISOLATED_ENV
    env = {k: os.environ[k] for k in kept if k in os.environ}
    if user is not None:
        work = str(directory / "work")
        env.update(HOME=work, USER=user.name, LOGNAME=user.name, TMPDIR=str(directory / "tmp"))
    # Fabbrica's own Python first: `python train.py` finds what Fabbrica was installed
    # with (scikit-learn for the examples), however `fabbrica up` was started.
    python_bin = os.path.dirname(sys.executable)
    env["PATH"] = os.pathsep.join(p for p in (python_bin, env.get("PATH", "")) if p)
    env.update(request.env)
    env.update(
        CUDA_VISIBLE_DEVICES=",".join(str(g) for g in gpus),
        FABBRICA_JOB_ID=request.run_tag,
        FABBRICA_NUM_GPUS=str(len(gpus)),
        FABBRICA_JOB_DIR=str(directory / "work"),
        FABBRICA_RUN=str(request.run),
    )
    if request.checkpoint is not None:
        checkpoints = directory / "work" / request.checkpoint.dir
        env["FABBRICA_CHECKPOINT_DIR"] = str(checkpoints).rstrip("/")
        env["FABBRICA_CHECKPOINT_EVERY"] = str(request.checkpoint.every_s)
    if request.datasets:
        env["FABBRICA_DATA"] = str(directory / "data")
    return env


def _close_root(root: Path) -> None:
    """Others may pass through the jobs' root but not list it; directories of jobs that
    ran before isolation (still root's group) become root's alone."""
    root.chmod(0o711)
    for child in root.iterdir():
        info = child.lstat()
        if stat.S_ISDIR(info.st_mode) and info.st_gid == 0 and info.st_mode & 0o077:
            child.chmod(stat.S_IMODE(info.st_mode) & 0o700)


def _exit_path(directory: Path, run: dict[str, Any]) -> Path:
    return directory / str(run.get("exit_file") or "exit_code")


def _read_small(path: Path) -> str | None:
    """A short file a job may have written: never through a link, never a FIFO or device."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, 64).decode(errors="replace")
    except OSError:
        return None
    finally:
        os.close(fd)


def _place_data(mounts: tuple[DataMount, ...], root: Path) -> None:
    """Each data set at `root/<name>`, read-only: its files hard-linked from where the
    server keeps them (they are read-only there too), or copied across file systems."""
    for mount in mounts:
        into = root / mount.name
        for path, source in mount.files:
            target = into / path
            if not os.path.realpath(target).startswith(os.path.realpath(into) + os.sep):
                raise ValueError(f"{path!r} leaves the data set {mount.name}")
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)
                target.chmod(0o444)
    for folder, _, _ in os.walk(root, topdown=False):
        os.chmod(folder, 0o555)  # noqa: S103 - inside the job's own (closed) directory


def _unpack(archive: Path, into: Path) -> None:
    with tarfile.open(archive, "r:*") as tar:
        tar.extractall(into, filter="data")  # refuses links and paths that leave `into`


def _write_json(path: Path, data: dict[str, Any]) -> None:
    # a name of its own per writer: two dispatchers polling one run may both write it
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _mtime(path: Path) -> dt.datetime | None:
    try:
        return dt.datetime.fromtimestamp(path.lstat().st_mtime, dt.UTC)
    except OSError:
        return None
