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
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from fabbrica.core.errors import Conflict, InvalidInput, NotFound
from fabbrica.store.models import Job

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
    if run != job.run:
        raise Conflict(
            f"run {run} of job {job.id} is over (its current run is {job.run})", field="run"
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
