"""Budgets for tar archives from users (workdir uploads), checked on the bytes in memory
before anything is stored: entries, total unpacked size, unpacked/packed ratio, and file
types (regular files, directories, and links that stay inside the tree; nothing else).

The archive is read as a stream, counting decompressed bytes as they come, so a bomb is
stopped as soon as it passes a limit, never fully inflated. Pure: bytes in, a summary or
an ArchiveError out.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import posixpath
import tarfile
import zlib
from dataclasses import dataclass
from typing import Protocol

from fabbrica.core.jobspec import is_inside

_CHUNK = 1024 * 1024
HEADER_ALLOWANCE = 2048  # tar bytes per entry beyond its data: header, long names, padding


@dataclass(frozen=True)
class ArchiveLimits:
    max_entries: int = 10_000
    max_unpacked_bytes: int = 1024**3
    max_ratio: float = 100.0  # unpacked / packed, checked once past `ratio_floor` bytes
    ratio_floor: int = 8 * 1024 * 1024


@dataclass(frozen=True)
class ArchiveSummary:
    entries: int
    unpacked_bytes: int  # the sum of the regular files' sizes


class ArchiveError(ValueError):
    """An archive refused; `too_large` when a size budget (not the content) refused it."""

    def __init__(self, message: str, *, too_large: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.too_large = too_large


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _Budget(io.RawIOBase):
    """A readable stream that counts what it hands out and stops past the budgets."""

    def __init__(self, inner: _Readable, packed: int, limits: ArchiveLimits) -> None:
        self.inner = inner
        self.packed = max(packed, 1)
        self.limits = limits
        self.cap = limits.max_unpacked_bytes + HEADER_ALLOWANCE * (limits.max_entries + 8)
        self.seen = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.inner.read(min(len(buffer), _CHUNK))  # never inflate much at once
        self.seen += len(data)
        if self.seen > self.cap:
            raise ArchiveError(
                f"it unpacks to more than {self.limits.max_unpacked_bytes:,} bytes",
                too_large=True,
            )
        ratio = self.seen / self.packed
        if self.seen > self.limits.ratio_floor and ratio > self.limits.max_ratio:
            raise ArchiveError(
                f"it unpacks to more than {self.limits.max_ratio:g} times its packed size "
                f"of {self.packed:,} bytes",
                too_large=True,
            )
        buffer[: len(data)] = data
        return len(data)


def _decompressed(data: bytes) -> _Readable:
    raw = io.BytesIO(data)
    if data[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if data[:3] == b"BZh":
        return bz2.BZ2File(raw, mode="rb")
    if data[:6] == b"\xfd7zXZ\x00":
        return lzma.LZMAFile(raw, mode="rb")
    return raw


def check_archive(data: bytes, limits: ArchiveLimits) -> ArchiveSummary:
    """The archive's entries and size, or ArchiveError saying which budget or entry."""
    stream = _Budget(_decompressed(data), len(data), limits)
    entries = 0
    total = 0
    seen: set[str] = set()
    try:
        with tarfile.open(fileobj=io.BufferedReader(stream), mode="r|") as tar:
            for member in tar:
                entries += 1
                if entries > limits.max_entries:
                    raise ArchiveError(
                        f"it holds more than {limits.max_entries:,} entries", too_large=True
                    )
                _check_member(member, seen)
                if member.isreg():
                    total += member.size
                    if total > limits.max_unpacked_bytes:
                        raise ArchiveError(
                            f"its files add up to more than {limits.max_unpacked_bytes:,} bytes",
                            too_large=True,
                        )
                seen.add(posixpath.normpath(member.name))
    except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
        raise ArchiveError(f"not a tar archive (plain, gzip, bzip2 or xz): {exc}") from exc
    return ArchiveSummary(entries, total)


def _check_member(member: tarfile.TarInfo, seen: set[str]) -> None:
    name = member.name
    if not name or not is_inside(name) or posixpath.normpath(name) == "..":
        raise ArchiveError(f"{name!r} leaves the workdir")
    if member.isreg() or member.isdir():
        return
    if member.issym():
        target = member.linkname
        resolved = posixpath.join(posixpath.dirname(name), target)
        if not target or target.startswith("/") or not is_inside(resolved):
            raise ArchiveError(
                f"{name!r} is a link to {target!r}, which leaves the workdir "
                "(only relative links inside it are taken)"
            )
        return
    if member.islnk():
        if posixpath.normpath(member.linkname) not in seen or not is_inside(member.linkname):
            raise ArchiveError(
                f"{name!r} is a hard link to {member.linkname!r}, not to a file before it "
                "in the archive"
            )
        return
    kinds = {
        tarfile.CHRTYPE: "a character device",
        tarfile.BLKTYPE: "a block device",
        tarfile.FIFOTYPE: "a FIFO",
    }
    kind = kinds.get(member.type, f"of type {member.type!r}")
    raise ArchiveError(
        f"{name!r} is {kind}: only regular files, directories and links inside the "
        "workdir are taken"
    )
