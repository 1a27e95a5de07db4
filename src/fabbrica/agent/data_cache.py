"""The agent's cache of data set files: each file once, under its sha256, checked when
fetched; a size limit, least recently used out first, never a file a held run reads.
Safe across threads (the agent stages each job in its own): a file two stagings need at
once is fetched by one while the other waits for it."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

from fabbrica.core.executor import DataMount

log = logging.getLogger("fabbrica.agent.data")
Fetch = Callable[[str, Path], Path]  # API path -> where to write -> that path
Progress = Callable[[DataMount, int, int], None]  # the version, files done, bytes done


class StagingError(Exception):
    """A file could not be fetched or did not match its sha256."""


class DataCache:
    def __init__(self, root: Path, limit_bytes: int, fetch: Fetch) -> None:
        self.root = root
        self.limit_bytes = limit_bytes
        self.fetch = fetch
        self.fetches = 0  # files fetched from the API (a hit fetches nothing)
        self._locks: dict[str, threading.Lock] = {}  # per sha256: one fetch at a time
        self._guard = threading.Lock()
        (root / "objects").mkdir(parents=True, exist_ok=True)
        for partial in root.glob(".*.part"):  # a fetch an earlier agent left unfinished
            partial.unlink(missing_ok=True)

    def object(self, sha256: str) -> Path:
        return self.root / "objects" / sha256

    def get(self, url: str) -> Path:
        """The file whose API path is `url` (ending in its sha256), fetched once."""
        sha = url.rstrip("/").rsplit("/", 1)[-1]
        with self._guard:
            lock = self._locks.setdefault(sha, threading.Lock())
        with lock:  # another staging fetching it: wait for that fetch, then a hit
            return self._get(url, sha)

    def _get(self, url: str, sha: str) -> Path:
        path = self.object(sha)
        if path.exists():
            os.utime(path)  # recently used
            return path
        temporary = self.root / f".{uuid.uuid4().hex}.part"
        try:
            self.fetch(url, temporary)
            if _sha256(temporary) != sha:
                raise StagingError(f"{url}: the bytes received do not match their sha256")
            temporary.chmod(0o444)
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
        with self._guard:
            self.fetches += 1
        log.info("fetched %s", sha)
        return path

    def stage(
        self, mounts: Iterable[DataMount], into: Path, progress: Progress | None = None
    ) -> None:
        """Every file of `mounts` at `into/<name>/<path>`, read-only, linked from the
        cache (copied across file systems); `progress` told after each file."""
        for mount in mounts:
            folder = into / mount.name
            done = 0
            if progress is not None:
                progress(mount, 0, 0)
            for count, (path, url) in enumerate(mount.files, 1):
                target = folder / path
                if not os.path.realpath(target).startswith(os.path.realpath(folder) + os.sep):
                    raise StagingError(f"{path!r} leaves the data set {mount.name}")
                target.parent.mkdir(parents=True, exist_ok=True)
                source = self.get(url)
                try:
                    os.link(source, target)
                except FileExistsError:
                    pass
                except OSError:
                    shutil.copyfile(source, target)
                    target.chmod(0o444)
                done += source.stat().st_size
                if progress is not None:
                    progress(mount, count, done)
        for folder_path, _, _ in os.walk(into, topdown=False):
            os.chmod(folder_path, 0o555)  # noqa: S103 - the run's own data, read-only

    def evict(self, in_use: set[str]) -> list[str]:
        """Remove the least recently used files until the cache is within its limit,
        never one of `in_use` (sha256 of files held runs read). Returns what went."""
        files = [p for p in (self.root / "objects").iterdir() if p.is_file()]
        total = sum(p.stat().st_size for p in files)
        removed = []
        for path in sorted(files, key=lambda p: p.stat().st_mtime):
            if total <= self.limit_bytes:
                break
            if path.name in in_use:
                continue
            total -= path.stat().st_size
            path.unlink()
            removed.append(path.name)
        return removed


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()
