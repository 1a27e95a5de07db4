"""The bytes of data sets on the server: uploads received in byte ranges, and a content
store where each file's bytes are kept once, named by their sha256, read-only.

    <files>/datasets/uploads/<upload id>.part   an upload under way (a tar)
    <files>/datasets/objects/ab/abcdef...       a file's bytes (mode 0444)
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from fabbrica.core.datasets import MAX_FILES, FileEntry, check_file_path
from fabbrica.core.errors import InvalidInput

DATASETS = "datasets"
BLOCK = 1024 * 1024


def part_path(files: Path, upload_id: str) -> Path:
    return files / DATASETS / "uploads" / f"{upload_id}.part"


def object_path(files: Path, sha256: str) -> Path:
    return files / DATASETS / "objects" / sha256[:2] / sha256


def write_range(files: Path, upload_id: str, start: int, data: bytes) -> None:
    """Write `data` at `start` of the upload, dropping anything after `start` first (bytes
    a crash left beyond what the database says was received)."""
    path = part_path(files, upload_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    with os.fdopen(fd, "r+b") as out:
        out.truncate(start)
        out.seek(start)
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


def discard_part(files: Path, upload_id: str) -> None:
    part_path(files, upload_id).unlink(missing_ok=True)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()


def ingest(files: Path, upload_id: str) -> list[FileEntry]:
    """The files of a complete upload (a tar of regular files and directories), each put
    in the content store; InvalidInput (field `data`) for anything else in the tar."""
    entries: dict[str, FileEntry] = {}
    try:
        with tarfile.open(part_path(files, upload_id), "r:") as tar:
            for member in tar:
                if member.isdir():
                    continue
                if not member.isreg() or member.issparse():
                    raise InvalidInput(
                        f"{member.name[:80]!r} is not a regular file (links, devices and "
                        "FIFOs have no place in a data set)",
                        "data",
                    )
                path = check_file_path(member.name.removeprefix("./"))
                if len(entries) >= MAX_FILES:
                    raise InvalidInput(f"a data set holds at most {MAX_FILES:,} files", "data")
                source = tar.extractfile(member)
                if source is None:  # pragma: no cover - a regular file always has one
                    continue
                with source:
                    sha, size = _store(files, _blocks(source))
                entries[path] = FileEntry(path, sha, size)
    except tarfile.TarError as exc:
        raise InvalidInput(f"the upload is not a tar archive: {exc}", "data") from exc
    if not entries:
        raise InvalidInput("the upload holds no file", "data")
    return sorted(entries.values(), key=lambda e: e.path)


def _blocks(source: object) -> Iterator[bytes]:
    read = source.read  # type: ignore[attr-defined]
    while block := read(BLOCK):
        yield block


def _store(files: Path, blocks: Iterable[bytes]) -> tuple[str, int]:
    """Write the bytes to the content store under their sha256 (once): (sha256, size)."""
    temporary = files / DATASETS / "objects" / ".partial" / uuid.uuid4().hex
    temporary.parent.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    try:
        with temporary.open("wb") as out:
            for block in blocks:
                digest.update(block)
                size += len(block)
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        sha = digest.hexdigest()
        final = object_path(files, sha)
        if not final.exists():
            final.parent.mkdir(parents=True, exist_ok=True)
            temporary.chmod(0o444)
            os.replace(temporary, final)
    finally:
        temporary.unlink(missing_ok=True)
    return sha, size


def remove_objects(files: Path, shas: Iterable[str]) -> None:
    for sha in shas:
        object_path(files, sha).unlink(missing_ok=True)


def sweep(files: Path, live_uploads: set[str], referenced: set[str]) -> list[Path]:
    """Delete what a crash left behind: partial objects, parts of uploads no row names,
    and objects no version names. Run at start, before requests are served."""
    root = files / DATASETS
    removed = [p for p in (root / "objects" / ".partial").glob("*") if p.is_file()]
    removed += [
        p
        for p in (root / "uploads").glob("*.part")
        if p.name.removesuffix(".part") not in live_uploads
    ]
    for folder in (root / "objects").glob("??"):
        removed += [p for p in folder.iterdir() if p.is_file() and p.name not in referenced]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed
