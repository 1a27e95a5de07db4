"""Where a job's files are: the uploaded workdir, its log and its outputs."""

from __future__ import annotations

import io
import tarfile
import uuid
from pathlib import Path

from fabbrica.core.errors import InvalidInput, NotFound
from fabbrica.core.executor import job_files
from fabbrica.core.jobs import run_tag
from fabbrica.core.jobspec import JobSpec, is_inside
from fabbrica.services.executors import ExecutorRegistry
from fabbrica.store.models import Job


def store_upload(files: Path, data: bytes) -> Path:
    """Keep an uploaded workdir archive (a tar, gzip or not); refuse anything else."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            for member in tar.getmembers():
                if not is_inside(member.name) or member.issym() or member.islnk():
                    raise InvalidInput(f"{member.name!r} leaves the workdir", field="workdir")
    except tarfile.TarError as exc:
        raise InvalidInput(f"the workdir is not a tar archive: {exc}", field="workdir") from exc
    folder = files / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{uuid.uuid4().hex}.tar"
    path.write_bytes(data)
    return path


def job_dir(executors: ExecutorRegistry, job: Job) -> Path:
    """The directory the job ran in, where its executor keeps files on this machine."""
    files = job_files(executors.get(job.factory_id or ""))
    if files is None:
        raise NotFound(f"job {job.id} has no files on this server", field="job_id")
    path = files.job_dir(run_tag(job.id))
    if not path.exists():
        raise NotFound(f"job {job.id} has not started yet", field="job_id")
    return path


def read_log(directory: Path, offset: int, limit: int = 1024 * 1024) -> tuple[bytes, int]:
    try:
        with (directory / "log").open("rb") as log:
            log.seek(offset)
            data = log.read(limit)
    except FileNotFoundError:
        return b"", offset
    return data, offset + len(data)


def outputs_archive(directory: Path, spec: JobSpec) -> bytes:
    """A gzipped tar of the job's outputs (the `outputs` of its spec, and outputs/)."""
    work = directory / "work"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name in dict.fromkeys(n.rstrip("/") or "." for n in [*spec.outputs, "outputs"]):
            path = (work / name).resolve()
            if work.resolve() in path.parents and path.exists():
                tar.add(path, arcname=str(path.relative_to(work.resolve())))
    return buffer.getvalue()
