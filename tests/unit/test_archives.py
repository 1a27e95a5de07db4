"""core.archives: the budgets of a workdir archive, checked as a stream, on bytes."""

from __future__ import annotations

import gzip
import io
import tarfile
import time

import pytest

from fabbrica.core.archives import ArchiveError, ArchiveLimits, check_archive


def tar_of(files: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:  # type: ignore[call-overload]
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz"])
def test_plain_and_compressed_archives_are_summed(mode: str) -> None:
    summary = check_archive(tar_of({"a": b"12345", "d/b": b"678"}, mode), ArchiveLimits())
    assert (summary.entries, summary.unpacked_bytes) == (2, 8)


def test_the_size_budget_counts_file_sizes() -> None:
    data = tar_of({"a": bytes(600), "b": bytes(600)})
    assert check_archive(data, ArchiveLimits(max_unpacked_bytes=1200)).unpacked_bytes == 1200
    with pytest.raises(ArchiveError, match="more than 1,199 bytes") as info:
        check_archive(data, ArchiveLimits(max_unpacked_bytes=1199))
    assert info.value.too_large


def test_a_stream_that_inflates_past_the_budget_stops_early() -> None:
    """A pax header of 200 MiB (the tar reader reads those into memory before it hands out
    the member): the stream budget stops it after a few MiB."""
    pax = tarfile.TarInfo("pax")
    pax.type, pax.size = tarfile.XHDTYPE, 200 * 1024 * 1024
    head = pax.tobuf()
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1) as out:
        out.write(head)
        block = bytes(1024 * 1024)
        for _ in range(200):
            out.write(block)
    began = time.perf_counter()
    with pytest.raises(ArchiveError) as info:
        check_archive(raw.getvalue(), ArchiveLimits(max_unpacked_bytes=1024**2, max_ratio=1e9))
    assert info.value.too_large
    assert time.perf_counter() - began < 5


def test_the_ratio_is_checked_past_its_floor_only() -> None:
    small = tar_of({"z": bytes(1024 * 1024)})  # 1 MiB of zeros: ratio ~1000, under the floor
    assert check_archive(small, ArchiveLimits()).unpacked_bytes == 1024 * 1024
    with pytest.raises(ArchiveError, match="100 times its packed size"):
        check_archive(tar_of({"z": bytes(9 * 1024 * 1024)}), ArchiveLimits())


def test_entries_are_counted() -> None:
    data = tar_of({f"f{i}": b"" for i in range(11)})
    assert check_archive(data, ArchiveLimits(max_entries=11)).entries == 11
    with pytest.raises(ArchiveError, match="more than 10 entries"):
        check_archive(data, ArchiveLimits(max_entries=10))


@pytest.mark.parametrize(
    ("kind", "name", "link", "ok"),
    [
        (tarfile.SYMTYPE, "a/l", "../f", True),
        (tarfile.SYMTYPE, "a/l", "../../f", False),
        (tarfile.SYMTYPE, "l", "/etc/passwd", False),
        (tarfile.SYMTYPE, "l", "", False),
        (tarfile.LNKTYPE, "h", "f", True),
        (tarfile.LNKTYPE, "h", "later", False),
        (tarfile.LNKTYPE, "h", "../f", False),
        (tarfile.FIFOTYPE, "p", "", False),
        (tarfile.CHRTYPE, "c", "", False),
        (tarfile.BLKTYPE, "b", "", False),
        (tarfile.DIRTYPE, "../up", "", False),
        (tarfile.REGTYPE, "/abs", "", False),
    ],
)
def test_file_types(kind: bytes, name: str, link: str, ok: bool) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.addfile(tarfile.TarInfo("f"), io.BytesIO(b""))
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, link
        tar.addfile(info)
    if ok:
        assert check_archive(buffer.getvalue(), ArchiveLimits()).entries == 2
    else:
        with pytest.raises(ArchiveError) as error:
            check_archive(buffer.getvalue(), ArchiveLimits())
        assert not error.value.too_large


@pytest.mark.parametrize(
    "data",
    [b"", b"not a tar at all" * 100, gzip.compress(b"x" * 5000, mtime=0)],
    ids=["empty", "text", "gzip-of-no-tar"],
)
def test_what_is_no_archive_is_an_archive_error(data: bytes) -> None:
    with pytest.raises(ArchiveError, match="not a tar archive"):
        check_archive(data, ArchiveLimits())
