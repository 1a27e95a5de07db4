"""The Slurm backend: an `Executor` that runs Fabbrica jobs on one Slurm cluster.

Every run lives in `<root>/runs/<tag>/`: the batch script, `slurm_id` (written as soon as
sbatch answers), `work/` (the job's directory) and `log` (stdout and stderr). Submission
is idempotent per tag: a run already in Slurm under that tag (comment `fab-<id>`, name
`fab-<id>-...`) is adopted, never submitted twice. States come from `squeue` while the
controller knows the job and from `sacct` once it ended; a finished run is reported only
when sacct has its final record, so what Fabbrica charges is what sacct shows.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import pwd
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fabbrica.backends.slurm import status as slurm
from fabbrica.backends.slurm.runner import SlurmCommandError, SlurmRunner
from fabbrica.backends.slurm.script import BatchJob, parse_sbatch_output, render, scancel_argv
from fabbrica.backends.slurm.script import sbatch_argv as _sbatch_argv
from fabbrica.catalog.model import Partition
from fabbrica.core.executor import (
    Capability,
    Capacity,
    LaunchRequest,
    RunState,
    RunStatus,
    UsageSample,
)
from fabbrica.core.jobs import job_id_of
from fabbrica.core.safe_yaml import YamlError, load_yaml

ADOPT_WINDOW = dt.timedelta(days=2)
MAP_MAX_BYTES = 1024 * 1024  # a partition map names a few partitions
_STATES = {
    slurm.SlurmState.PENDING: RunState.PENDING,
    slurm.SlurmState.RUNNING: RunState.RUNNING,
    slurm.SlurmState.SUSPENDED: RunState.RUNNING,
    slurm.SlurmState.CANCELLED: RunState.CANCELLED,
    slurm.SlurmState.TIMEOUT: RunState.TIMED_OUT,
}


class MapError(ValueError):
    """A partition map that cannot be used."""


@dataclass(frozen=True, slots=True)
class Mapping:
    """A catalog partition as Slurm knows it."""

    partition: str  # catalog partition id (what Fabbrica places on)
    gpu_model: str  # catalog GPU model
    slurm_partition: str
    gres_type: str | None  # the GRES Type in gres.conf; None: untyped `gpu:N`


def read_partition_map(path: Path | None, partitions: list[Partition]) -> dict[str, Mapping]:
    """Catalog partition id -> Slurm partition and GRES type, from a JSON or YAML file:
    `{"partitions": {"booster": {"slurm_partition": "gpu", "gres_type": "gh200"}}}`; the
    partitions it leaves out are not run here. Without a file, every operating partition
    maps to the Slurm partition of the same name, with the catalog's GPU model as type."""
    given: dict[str, dict[str, str]] = {}
    if path is not None:
        try:
            data = load_yaml(path.read_bytes(), max_bytes=MAP_MAX_BYTES)
        except (OSError, YamlError) as exc:
            raise MapError(f"--partition-map {path}: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("partitions"), dict):
            raise MapError(f"--partition-map {path}: needs a `partitions` mapping")
        given = data["partitions"]
    known = {p.id: p for p in partitions}
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise MapError(
            f"--partition-map: {', '.join(unknown)} not among this factory's partitions "
            f"({', '.join(sorted(known))})"
        )
    found = {}
    for pid, part in known.items():
        if path is not None and pid not in given:
            continue
        entry = given.get(pid, {})
        if not isinstance(entry, dict):
            raise MapError(f"--partition-map: partitions.{pid} must be a mapping")
        found[pid] = Mapping(
            partition=pid,
            gpu_model=part.gpu_model,
            slurm_partition=str(entry.get("slurm_partition", pid)),
            gres_type=str(entry.get("gres_type", part.gpu_model)) or None,
        )
    if not found:
        raise MapError("--partition-map maps no partition of this factory")
    return found


class SlurmExecutor:
    def __init__(
        self, runner: SlurmRunner, partitions: dict[str, Mapping], root: Path, name: str = "slurm"
    ) -> None:
        self.runner = runner
        self.partitions = partitions
        self.root = root
        self.name = name
        (root / "runs").mkdir(parents=True, exist_ok=True)

    @classmethod
    def configure(
        cls,
        *,
        slurm_conf: Path | None,
        partition_map: Path | None,
        partitions: list[Partition],
        root: Path,
    ) -> SlurmExecutor:
        runner = SlurmRunner(str(slurm_conf) if slurm_conf else None)
        return cls(runner, read_partition_map(partition_map, partitions), root)

    # --- the protocol ------------------------------------------------------------------

    def capabilities(self) -> frozenset[Capability]:
        return frozenset({Capability.MULTI_NODE})

    def capacity(self) -> list[Capacity]:
        nodes = parse_nodes(self._run(["scontrol", "--oneliner", "show", "node"]))
        pending = self._run(["squeue", "--noheader", "--states=PENDING", "--format=%P"])
        waiting = [line.strip() for line in pending.splitlines() if line.strip()]
        found = []
        for mapping in self.partitions.values():
            total = used = 0
            for node in nodes:
                if mapping.slurm_partition in node.partitions and node.usable:
                    total += node.gpus
                    used += node.gpus_used
            found.append(
                Capacity(
                    partition=mapping.partition,
                    gpu_model=mapping.gpu_model,
                    total_gpus=total,
                    free_gpus=max(total - used, 0),
                    queued=sum(1 for p in waiting if p == mapping.slurm_partition),
                )
            )
        return found

    def submit(self, request: LaunchRequest) -> RunStatus:
        run_dir = self.job_dir(request.run_tag)
        known = self._slurm_id(request.run_tag)
        if known is not None:
            current = self.poll([request.run_tag])[0]
            if not current.state.finished and current.state is not RunState.UNKNOWN:
                return current  # already submitted: never twice
            aside = _set_aside(run_dir)
            if aside is not None and request.run > 1:  # an earlier run of this job
                _carry_log(aside, run_dir, request.run)
            if aside is not None and request.checkpoint is not None:  # resumed here
                kept = aside / "work" / request.checkpoint.dir
                if kept.is_dir():
                    target = run_dir / "work" / request.checkpoint.dir
                    target.parent.mkdir(parents=True, exist_ok=True)
                    kept.rename(target)
        live = self._find_live(request.run_tag)
        if live is not None:  # submitted before a crash, its id not yet written
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "slurm_id").write_text(live)
            return self.poll([request.run_tag])[0]
        return self._submit(request, run_dir)

    def poll(self, run_tags: list[str]) -> list[RunStatus]:
        ids = {tag: self._slurm_id(tag) for tag in run_tags}
        wanted = [i for i in ids.values() if i]
        live = {j.site_job_id: j for j in self._squeue(wanted)} if wanted else {}
        done = {j.site_job_id: j for j in self._sacct(wanted)} if wanted else {}
        return [self._status(tag, ids[tag], live, done) for tag in run_tags]

    def cancel(self, run_tag: str) -> RunStatus:
        slurm_id = self._slurm_id(run_tag)
        if slurm_id is None:
            live = self._find_live(run_tag)
            if live is None:
                return RunStatus(run_tag, RunState.UNKNOWN)
            slurm_id = live
        self._run(scancel_argv(slurm_id))
        return self.poll([run_tag])[0]

    def usage(self, run_tags: list[str]) -> list[UsageSample]:
        found = []
        for status in self.poll(run_tags):
            if status.elapsed_s is not None and status.gpus is not None:
                found.append(
                    UsageSample(status.run_tag, status.gpus, dt.timedelta(seconds=status.elapsed_s))
                )
        return found

    def adopt(self) -> list[RunStatus]:
        """Runs in Slurm with a Fabbrica tag: live ones, and ones that ended lately."""
        since = dt.datetime.now(dt.UTC) - ADOPT_WINDOW
        jobs = self._squeue([]) + self._sacct([], since=since)
        tags: dict[str, str] = {}
        for job in jobs:
            tag = job.run_tag
            if tag and job.partition in {m.slurm_partition for m in self.partitions.values()}:
                tags.setdefault(tag, job.site_job_id)
        for tag, slurm_id in tags.items():
            run_dir = self.job_dir(tag)
            if self._slurm_id(tag) is None:
                run_dir.mkdir(parents=True, exist_ok=True)
                (run_dir / "slurm_id").write_text(slurm_id)
        return self.poll(sorted(tags))

    def job_dir(self, run_tag: str) -> Path:
        if job_id_of(run_tag) is None:
            raise ValueError(f"{run_tag!r} is not a run tag")
        return self.root / "runs" / run_tag

    # --- helpers -----------------------------------------------------------------------

    def _submit(self, request: LaunchRequest, run_dir: Path) -> RunStatus:
        mapping = self.partitions.get(request.partition)
        if mapping is None:
            raise ValueError(f"partition {request.partition!r} is not run by this agent")
        work = run_dir / "work"
        work.mkdir(parents=True, exist_ok=True)
        if request.workdir_archive:
            with tarfile.open(request.workdir_archive, mode="r:*") as tar:
                tar.extractall(work, filter="data")
        log = run_dir / "log"
        log.touch()
        nodes = max(request.nodes, 1)
        job = BatchJob(
            job_id=_job_number(request.run_tag),
            name="",  # the job's name is then exactly its run tag
            account=request.account or "",
            partition=mapping.slurm_partition,
            gpu_model=mapping.gres_type,
            gpus=max(request.gpus // nodes, 1),
            nodes=nodes,
            time_limit_seconds=max(int(request.time_limit.total_seconds()), 60),
            command=request.command,
            env=dict(request.env),
            workdir=str(work),
            data_dir=request.data_dir,
            stdout_path=str(log),
            stderr_path=str(log),
            run=max(request.run, 1),
            **_checkpointing(request, work),
        )
        script = run_dir / "job.sh"
        script.write_text(render(job), encoding="ascii")
        argv = _sbatch_argv(str(script))
        if request.user:
            _give(run_dir, request.user)
            argv = ["runuser", "-u", request.user, "--", *argv]
        out = self._run(argv)
        slurm_id = parse_sbatch_output(out)
        (run_dir / "slurm_id").write_text(slurm_id)
        return RunStatus(request.run_tag, RunState.PENDING, site_job_id=slurm_id)

    def _status(
        self,
        tag: str,
        slurm_id: str | None,
        live: dict[str, slurm.SlurmJob],
        done: dict[str, slurm.SlurmJob],
    ) -> RunStatus:
        if slurm_id is None:
            return RunStatus(tag, RunState.UNKNOWN)
        record = done.get(slurm_id)
        if record is not None and record.state.finished:
            return RunStatus(
                tag,
                _final_state(record),
                started_at=record.start,
                ended_at=record.end,
                exit_code=record.exit_code,
                reason=None if record.state is slurm.SlurmState.COMPLETED else record.raw_state,
                site_job_id=slurm_id,
                gpus=record.gpus,
                elapsed_s=float(record.elapsed_seconds),
            )
        job = live.get(slurm_id) or record
        if job is None:
            return RunStatus(tag, RunState.UNKNOWN, site_job_id=slurm_id)
        state = RunState.RUNNING if job.state.finished else _STATES.get(job.state, RunState.PENDING)
        return RunStatus(
            tag,
            state,  # ended, but sacct has no final record yet: still running for us
            started_at=job.start if state is RunState.RUNNING else None,
            reason=job.reason if state is RunState.PENDING else None,
            site_job_id=slurm_id,
        )

    def _slurm_id(self, tag: str) -> str | None:
        try:
            return (self.job_dir(tag) / "slurm_id").read_text().strip() or None
        except (OSError, ValueError):
            return None

    def _find_live(self, tag: str) -> str | None:
        # scripts are named exactly after the tag (see _submit): ask for that name only
        for job in self._squeue([], name=tag):
            if job.run_tag == tag and not job.state.finished:
                return job.site_job_id
        return None

    def _squeue(self, ids: list[str], name: str | None = None) -> list[slurm.SlurmJob]:
        try:
            out = self._run(slurm.squeue_argv(ids, name=name))
        except SlurmCommandError as exc:
            if slurm.is_invalid_job_error(exc.stderr):
                return []
            raise
        return slurm.parse_squeue(out)

    def _sacct(self, ids: list[str], since: dt.datetime | None = None) -> list[slurm.SlurmJob]:
        return slurm.parse_sacct(self._run(slurm.sacct_argv(ids, since=since)))

    def _run(self, argv: list[str]) -> str:
        return self.runner.run(argv, env_overrides=slurm.STATUS_ENV).stdout


def _job_number(tag: str) -> int:
    number = job_id_of(tag)
    if number is None:
        raise ValueError(f"{tag!r} is not a run tag")
    return number


def _final_state(job: slurm.SlurmJob) -> RunState:
    if job.state is slurm.SlurmState.COMPLETED:
        return RunState.SUCCEEDED if (job.exit_code or 0) == 0 else RunState.FAILED
    return _STATES.get(job.state, RunState.FAILED)


def _set_aside(run_dir: Path) -> Path | None:
    """An earlier run of the same job (it was placed here again): keep it beside; where."""
    if not run_dir.exists():
        return None
    n = 1
    while run_dir.with_name(f"{run_dir.name}.{n}").exists():
        n += 1
    aside = run_dir.with_name(f"{run_dir.name}.{n}")
    run_dir.rename(aside)
    return aside


def _carry_log(aside: Path, run_dir: Path, run: int) -> None:
    """A later run of the job here: its log goes on after the earlier run's (as on the
    local backend; Slurm appends, `--open-mode=append`), so the log the server shows keeps
    both (the agent sends the whole of it again for the new run, the same bytes first)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):  # no log kept: the new one starts with the mark
        shutil.copyfile(aside / "log", run_dir / "log")
    with (run_dir / "log").open("ab") as log:
        log.write(f"--- fabbrica: run {run} of this job ---\n".encode())


def _give(run_dir: Path, user: str) -> None:
    """Make the run's directory the site user's, so the job (running as them) can write."""
    entry = pwd.getpwnam(user)
    for path in [run_dir, *run_dir.rglob("*")]:
        os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    partitions: frozenset[str]
    gpus: int
    gpus_used: int
    usable: bool


def parse_nodes(text: str) -> list[Node]:
    """`scontrol --oneliner show node`: each node's partitions, GPUs and GPUs in use."""
    nodes = []
    for line in text.splitlines():
        fields = dict(
            part.split("=", 1) for part in line.split() if "=" in part and not part.startswith("=")
        )
        if "NodeName" not in fields:
            continue
        gres_gpus, _ = slurm.gpus_from_tres(fields.get("CfgTRES", ""))
        used, _ = slurm.gpus_from_tres(fields.get("AllocTRES", ""))
        state = fields.get("State", "").upper()
        nodes.append(
            Node(
                name=fields["NodeName"],
                partitions=frozenset(p for p in fields.get("Partitions", "").split(",") if p),
                gpus=gres_gpus,
                gpus_used=used,
                usable=not any(s in state for s in ("DOWN", "DRAIN", "FAIL", "NOT_RESPONDING")),
            )
        )
    return nodes


def _checkpointing(request: LaunchRequest, work: Path) -> dict[str, Any]:
    """The batch job's checkpoint fields: `--signal=B:USR1@<grace>` and the folder, with
    the last checkpoint the server holds unpacked into it (the agent downloaded it: sent by
    the job's last run, here or at another site)."""
    if request.checkpoint is None:
        return {}
    folder = work / request.checkpoint.dir
    if request.checkpoint.archive:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        with tarfile.open(request.checkpoint.archive, mode="r:*") as tar:
            tar.extractall(folder, filter="data")
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "signal_grace_seconds": request.checkpoint.grace_s,
        "checkpoint_dir": str(folder).rstrip("/"),
        "checkpoint_every_seconds": request.checkpoint.every_s,
    }
