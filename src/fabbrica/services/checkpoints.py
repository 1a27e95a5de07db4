"""A job's checkpoint folder kept on the server, so that it follows the job across sites.

A site agent sends the folder of a run (a tar) while the run goes on, whenever it changed,
and once more when the run ended; before a later run of the job starts at any agent's
factory, the agent downloads the last one and unpacks it into the run's folder. A send
comes in parts (each under the request body limit), from an offset like a log, into a
part file named by the whole tar's SHA-256: an interrupted send goes on where it stopped,
and once all the bytes are there they are checked against that SHA-256 and the size and
only then become the job's checkpoint (the tar under its hash, then `checkpoint.json`
naming it, each by rename: a reader sees the old checkpoint or the new one, whole).

Only the factory that holds the job's current run may send, and only for that run: a run
that was lost, and goes on at its old site, can no longer replace what a later run sent.

A job that finished for good (succeeded, failed, cancelled, or timed out without being
queued again) needs its checkpoint no more: `CheckpointSweep`, a step of the control loop,
deletes it once the job has been over for `FABBRICA_CHECKPOINT_KEEP_DAYS` (default 0: at
the next sweep), and the checkpoint of a job that no longer exists. A job queued again (to
resume, or lost) is not over: its checkpoint stays for its next run.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from fabbrica.core.errors import Conflict, InvalidInput, NotFound
from fabbrica.core.jobs import JobState
from fabbrica.store.db import Database
from fabbrica.store.models import Job

log = logging.getLogger("fabbrica.checkpoints")

CHECKPOINTS = "checkpoints"
SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_CHECKPOINT_BYTES = 1024**4  # a tar of a job's checkpoint folder, at most


@dataclass(frozen=True, slots=True)
class Stored:
    """The job's last checkpoint on the server."""

    path: Path
    sha256: str
    size: int
    run: int
    factory: str


def folder(files: Path, job_id: int) -> Path:
    return files / CHECKPOINTS / str(job_id)


def stored(files: Path | None, job_id: int) -> Stored | None:
    """The last checkpoint a run of the job sent (None: none yet)."""
    if files is None:
        return None
    where = folder(files, job_id)
    try:
        meta = json.loads((where / "checkpoint.json").read_text())
    except (OSError, ValueError):
        return None
    path = where / f"{meta['sha256']}.tar"
    if not path.is_file():
        return None
    return Stored(path, meta["sha256"], int(meta["size"]), int(meta["run"]), str(meta["factory"]))


def receive(
    files: Path | None,
    job: Job,
    *,
    run: int,
    offset: int,
    size: int,
    sha256: str,
    data: bytes,
) -> tuple[int, bool]:
    """Write a part of a run's checkpoint tar (`size` bytes in all, whose SHA-256 is
    `sha256`) from byte `offset`; once it is whole and checks, it becomes the job's
    checkpoint. (bytes received, whether it is now the job's checkpoint)."""
    if files is None:
        raise NotFound("this server keeps no files", field="job_id")
    if not SHA256.match(sha256):
        raise InvalidInput("sha256 must be 64 lower-case hex digits", field="sha256")
    if not 0 < size <= MAX_CHECKPOINT_BYTES:
        raise InvalidInput(f"size must be 1 to {MAX_CHECKPOINT_BYTES} bytes", field="size")
    if run != job.run or JobState(job.state).finished:
        raise Conflict(
            f"run {run} of job {job.id} is over (its current run is {job.run}, {job.state})",
            field="run",
        )
    where = folder(files, job.id)
    where.mkdir(parents=True, exist_ok=True)
    part = where / f"incoming-{sha256}.part"
    have = part.stat().st_size if part.exists() else 0
    if offset > have:
        raise Conflict(f"the server has {have} bytes of this checkpoint; send from there", "offset")
    if offset + len(data) > size:
        raise InvalidInput(f"the part ends past size ({size} bytes)", field="size")
    with part.open("r+b" if part.exists() else "wb") as handle:
        handle.seek(offset)
        handle.write(data)
        handle.truncate()
        received = handle.tell()
    if received < size:
        return received, False
    digest = hashlib.sha256()
    with part.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    if digest.hexdigest() != sha256:
        part.unlink(missing_ok=True)
        raise Conflict("the checkpoint's bytes do not match its sha256; send it again", "sha256")
    os.replace(part, where / f"{sha256}.tar")
    meta = {"sha256": sha256, "size": size, "run": run, "factory": job.factory_id}
    tmp = where / f"checkpoint.json.{sha256}"
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, where / "checkpoint.json")
    for old in where.iterdir():  # earlier checkpoints, and sends that will not finish
        if old.name not in ("checkpoint.json", f"{sha256}.tar"):
            old.unlink(missing_ok=True)
    return received, True


# --- deleting the checkpoints of jobs that are over ------------------------------------------

SWEEP_EVERY_S = 30.0  # how often the control loop looks for checkpoints to delete
_CHUNK = 500  # job ids per query


def sweep(session: Session, files: Path | None, now: dt.datetime, keep: dt.timedelta) -> list[int]:
    """Delete the stored checkpoint of every job that finished for good at least `keep`
    ago (by its end, else its submission), and of every job that no longer exists; the
    ids of the jobs whose checkpoint went."""
    if files is None:
        return []
    try:
        ids = sorted(int(p.name) for p in (files / CHECKPOINTS).iterdir() if p.name.isdigit())
    except OSError:
        return []
    over: dict[int, bool] = {}
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        rows = session.execute(
            select(Job.id, Job.state, Job.ended_at, Job.submitted_at).where(Job.id.in_(chunk))
        )
        for job_id, state, ended, submitted in rows:
            since = _aware(ended or submitted)
            over[job_id] = JobState(state).finished and since + keep <= now
    gone = [job_id for job_id in ids if over.get(job_id, True)]
    for job_id in gone:
        shutil.rmtree(folder(files, job_id), ignore_errors=True)
    return gone


def _aware(when: dt.datetime) -> dt.datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


class CheckpointSweep:
    """The control loop's step: `sweep` at most every `every` seconds (the first tick at
    once); the number of checkpoints deleted."""

    def __init__(
        self,
        db: Database,
        files: Path | None,
        clock: Callable[[], dt.datetime],
        keep: dt.timedelta,
        every: float = SWEEP_EVERY_S,
    ) -> None:
        self.db, self.files, self.clock, self.keep, self.every = db, files, clock, keep, every
        self._last: float | None = None

    def __call__(self) -> int:
        if self.files is None or not (self.files / CHECKPOINTS).is_dir():
            return 0
        began = time.monotonic()
        if self._last is not None and began - self._last < self.every:
            return 0
        self._last = began
        with self.db.read_session() as session:
            gone = sweep(session, self.files, self.clock(), self.keep)
        if gone:
            log.info("deleted the checkpoints of %d finished job(s)", len(gone))
        return len(gone)
