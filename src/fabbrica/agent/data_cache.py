"""The agent's cache of data set files: each file once, under its sha256, checked when
fetched; a size limit, least recently used out first, never a file a held run reads."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

from fabbrica.core.executor import DataMount

log = logging.getLogger("fabbrica.agent.data")
Fetch = Callable[[str, Path], Path]  # API path -> where to write -> that path


class StagingError(Exception):
    """A file could not be fetched or did not match its sha256."""


class DataCache:
    def __init__(self, root: Path, limit_bytes: int, fetch: Fetch) -> None:
        self.root = root
        self.limit_bytes = limit_bytes
        self.fetch = fetch
        self.fetches = 0  # files fetched from the API (a hit fetches nothing)
        (root / "objects").mkdir(parents=True, exist_ok=True)

    def object(self, sha256: str) -> Path:
        return self.root / "objects" / sha256

    def get(self, url: str) -> Path:
        """The file whose API path is `url` (ending in its sha256), fetched once."""
        sha = url.rstrip("/").rsplit("/", 1)[-1]
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
        self.fetches += 1
        log.info("fetched %s", sha)
        return path

    def stage(self, mounts: Iterable[DataMount], into: Path) -> None:
        """Every file of `mounts` at `into/<name>/<path>`, read-only, linked from the
        cache (copied across file systems)."""
        for mount in mounts:
            folder = into / mount.name
            for path, url in mount.files:
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
