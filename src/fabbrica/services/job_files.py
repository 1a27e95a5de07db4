"""Where a job's files are: the uploaded workdir, its log and its outputs.

Uploads are checked in memory (core.archives) before anything is written; a stored upload
is first written under `uploads/.partial/` and renamed when complete, and the submission
that made it deletes it again if it is refused. Whatever a crash left behind (partial
files, archives no job refers to) is swept when the server starts (`sweep_uploads`).
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import uuid
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from fabbrica.core.archives import ArchiveError, ArchiveLimits, check_archive
from fabbrica.core.errors import InvalidInput, NotFound, TooLarge
from fabbrica.core.executor import job_files
from fabbrica.core.jobs import run_tag
from fabbrica.core.jobspec import JobSpec
from fabbrica.services.executors import ExecutorRegistry
from fabbrica.store.models import Job

UPLOADS = "uploads"
PARTIAL = ".partial"


def check_upload(data: bytes, limits: ArchiveLimits) -> None:
    """Refuse (naming the field `workdir`) an archive over a budget or holding anything
    but regular files, directories and links that stay inside it."""
    try:
        check_archive(data, limits)
    except ArchiveError as exc:
        error = TooLarge if exc.too_large else InvalidInput
        raise error(f"the workdir archive is refused: {exc.message}", field="workdir") from exc


def upload_path(files: Path) -> Path:
    """A new, unused place for an upload (nothing is written yet)."""
    return files / UPLOADS / f"{uuid.uuid4().hex}.tar"


def store_upload(path: Path, data: bytes) -> None:
    """Write a checked upload to `path` (from upload_path), completely or not at all."""
    partial = path.parent / PARTIAL / path.name
    partial.parent.mkdir(parents=True, exist_ok=True)
    try:
        partial.write_bytes(data)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def discard_upload(path: Path | None) -> None:
    if path is not None:
        path.unlink(missing_ok=True)


def sweep_uploads(session: Session, files: Path) -> list[Path]:
    """Delete what no job refers to: partial uploads and archives of submissions that never
    committed (a crash mid-request). Run at start, before requests are served: one server
    per data directory. Returns what was deleted."""
    folder = files / UPLOADS
    if not folder.is_dir():
        return []
    removed = [p for p in (folder / PARTIAL).glob("*") if p.is_file() or p.is_symlink()]
    query = select(Job.workdir_archive).where(Job.workdir_archive.is_not(None))
    kept = {Path(p).name for p in session.scalars(query) if p}
    removed += [p for p in folder.glob("*.tar") if p.name not in kept]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def job_dir(executors: ExecutorRegistry, job: Job) -> Path:
    """The directory the job ran in, where its executor keeps files on this machine."""
    files = job_files(executors.get(job.factory_id or ""))
    if files is None:
        raise NotFound(f"job {job.id} has no files on this server", field="job_id")
    path = files.job_dir(run_tag(job.id))
    if not path.exists():
        raise NotFound(f"job {job.id} has not started yet", field="job_id")
    return path


def job_log(
    executors: ExecutorRegistry, job: Job, offset: int, limit: int = 1024 * 1024
) -> tuple[bytes, int]:
    """The job's log from byte `offset`, as `read_log`; a job not placed or not started yet
    has an empty log (its state says why), not an error."""
    if job.factory_id is None:
        return b"", offset
    files = job_files(executors.get(job.factory_id))
    if files is None:
        raise NotFound(f"job {job.id} has no files on this server", field="job_id")
    return read_log(files.job_dir(run_tag(job.id)), offset, limit)


def read_log(directory: Path, offset: int, limit: int = 1024 * 1024) -> tuple[bytes, int]:
    """The log from byte `offset` (at most `limit` bytes) and the offset after it; past the
    end: nothing, and the same offset."""
    try:
        with (directory / "log").open("rb") as log:
            if offset >= os.fstat(log.fileno()).st_size:
                return b"", offset
            log.seek(offset)
            data = log.read(limit)
    except FileNotFoundError:
        return b"", offset
    return data, offset + len(data)


def outputs_archive(directory: Path, spec: JobSpec, limits: ArchiveLimits) -> bytes:
    """A gzipped tar of the job's outputs (the `outputs` of its spec, and outputs/): regular
    files, directories and relative links that stay inside the job's tree, nothing else
    (no devices, FIFOs, sockets, absolute or escaping links; links are never followed).
    TooLarge (field `outputs`) past the archive budgets."""
    root = os.path.realpath(directory / "work")
    buffer = io.BytesIO()
    packer = _Packer(root, limits)
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for start in _output_starts(root, spec):
            packer.add_tree(tar, start)
    return buffer.getvalue()


def _output_starts(root: str, spec: JobSpec) -> list[str]:
    """The real paths of the spec's outputs (and outputs/) that exist inside the tree."""
    starts = []
    for name in dict.fromkeys(n.rstrip("/") or "." for n in [*spec.outputs, "outputs"]):
        start = os.path.realpath(os.path.join(root, name))
        if _within(root, start) and start != root and os.path.lexists(start):
            starts.append(start)
    return starts


def output_names(directory: Path, spec: JobSpec, limits: ArchiveLimits) -> list[str]:
    """The names of the regular files `outputs_archive` would pack, found by walking the
    tree without reading a file (a page lists them on every view). TooLarge past the
    archive's entry budget."""
    root = os.path.realpath(directory / "work")
    seen: set[str] = set()
    names: list[str] = []
    for start in _output_starts(root, spec):
        pending = [start]
        while pending:
            path = pending.pop()
            name = os.path.relpath(path, root)
            if name in seen:
                continue
            seen.add(name)
            if len(seen) > limits.max_entries:
                raise TooLarge(
                    f"the outputs hold more than {limits.max_entries:,} entries", field="outputs"
                )
            try:
                info = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISDIR(info.st_mode):
                with os.scandir(path) as found:
                    pending.extend(sorted((e.path for e in found), reverse=True))
            elif stat.S_ISREG(info.st_mode):
                names.append(name)
    return names


def open_output(directory: Path, spec: JobSpec, name: str) -> BinaryIO:
    """One output file (a name `output_names` lists), opened for reading without packing
    the others: every directory on the way is opened without following a link, as the
    archive never follows one. NotFound (field `path`) for anything else."""
    root = os.path.realpath(directory / "work")
    missing = NotFound(f"no output {name!r}", field="path")
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise missing
    starts = [os.path.relpath(s, root) for s in _output_starts(root, spec)]
    if not any(name == s or name.startswith(s + "/") for s in starts):
        raise missing
    flags = os.O_RDONLY | os.O_NOFOLLOW
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        raise missing from None
    try:
        for part in parts[:-1]:
            inner = os.open(part, flags | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
        file_fd = os.open(parts[-1], flags | os.O_NONBLOCK, dir_fd=fd)
    except OSError:
        raise missing from None
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(file_fd).st_mode):
        os.close(file_fd)
        raise missing
    return os.fdopen(file_fd, "rb")


def _within(root: str, path: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


class _Packer:
    def __init__(self, root: str, limits: ArchiveLimits) -> None:
        self.root = root
        self.limits = limits
        self.entries = 0
        self.total = 0
        self.seen: set[str] = set()

    def add_tree(self, tar: tarfile.TarFile, start: str) -> None:
        """`start` and what is under it, depth first, without following links."""
        pending = [start]
        while pending:
            path = pending.pop()
            name = os.path.relpath(path, self.root)
            if name in self.seen:
                continue
            self.seen.add(name)
            try:
                info = os.lstat(path)
            except OSError:
                continue  # gone meanwhile
            if stat.S_ISDIR(info.st_mode):
                self._count(0)
                tar.addfile(_entry(name, tarfile.DIRTYPE, info.st_mode, info.st_mtime))
                with os.scandir(path) as found:
                    pending.extend(sorted((e.path for e in found), reverse=True))
            elif stat.S_ISREG(info.st_mode):
                self._add_file(tar, path, name)
            elif stat.S_ISLNK(info.st_mode):
                target = os.readlink(path)
                if not os.path.isabs(target) and _within(self.root, os.path.realpath(path)):
                    self._count(0)
                    link = _entry(name, tarfile.SYMTYPE, 0o777, info.st_mtime)
                    link.linkname = target
                    tar.addfile(link)
            # anything else (FIFO, socket, device) is left out

    def _add_file(self, tar: tarfile.TarFile, path: str, name: str) -> None:
        try:  # never through a link, never blocking on a FIFO swapped in meanwhile
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return
        with os.fdopen(fd, "rb") as file:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return
            self._count(info.st_size)
            data = file.read(info.st_size)
        entry = _entry(name, tarfile.REGTYPE, info.st_mode, info.st_mtime)
        entry.size = len(data)
        tar.addfile(entry, io.BytesIO(data))

    def _count(self, size: int) -> None:
        self.entries += 1
        self.total += size
        if self.entries > self.limits.max_entries:
            raise TooLarge(
                f"the outputs hold more than {self.limits.max_entries:,} entries; "
                "fewer, larger files (an archive of them) can be downloaded",
                field="outputs",
            )
        if self.total > self.limits.max_unpacked_bytes:
            raise TooLarge(
                f"the outputs add up to more than {self.limits.max_unpacked_bytes:,} bytes",
                field="outputs",
            )


def _entry(name: str, kind: bytes, mode: int, mtime: float) -> tarfile.TarInfo:
    entry = tarfile.TarInfo(name)
    entry.type = kind
    entry.mode = stat.S_IMODE(mode) & 0o755 if kind != tarfile.SYMTYPE else 0o777
    entry.mtime = int(mtime)
    return entry
