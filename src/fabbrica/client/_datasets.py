"""Data sets: add (a resumable upload in byte ranges), list, show, download, delete,
Croissant.

`add_dataset` packs the file or folder into a tar whose bytes depend only on the files'
paths and contents (no times, owners or modes), so that packing again after an
interruption gives the same bytes and the same sha256: the server recognises the upload and
says how much of it it has, and only the rest is sent.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from fabbrica.client._errors import ApiError, JobSpecError
from fabbrica.client._http import Http

#: Bytes per PUT of an upload.
CHUNK_BYTES = 4 * 1024 * 1024
_BLOCK = 1024 * 1024


@dataclass(frozen=True)
class DatasetProgress:
    """Passed to `add_dataset(progress=...)`: bytes the server has, of `total`;
    `resumed_from` is what it already had when this upload (re)started."""

    sent: int
    total: int
    resumed_from: int


@dataclass(frozen=True)
class PackedDataset:
    file: IO[bytes]
    size: int
    sha256: str
    files: int


def pack_dataset(path: Path) -> PackedDataset:
    """A tar of the file, or of the files under the folder (links refused), in a
    temporary file: the same files give the same bytes."""
    if not path.exists():
        raise JobSpecError(f"{path} does not exist", "path")
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if not p.is_dir())
        entries = [(p, p.relative_to(path).as_posix()) for p in found]
    else:
        entries = [(path, path.name)]
    for source, _ in entries:
        if source.is_symlink() or not source.is_file():
            raise JobSpecError(f"{source} is not a regular file (links are not followed)", "path")
    if not entries:
        raise JobSpecError(f"{path} holds no file", "path")
    out = tempfile.TemporaryFile()  # noqa: SIM115 - returned open, closed by the caller
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for source, name in entries:
            info = tarfile.TarInfo(name)
            info.size = source.stat().st_size
            info.mode = 0o644
            with source.open("rb") as data:
                tar.addfile(info, data)
    size = out.tell()
    out.seek(0)
    digest = hashlib.sha256()
    while block := out.read(_BLOCK):
        digest.update(block)
    return PackedDataset(out, size, digest.hexdigest(), len(entries))


class DatasetsApi(Http):
    def add_dataset(
        self,
        path: str | os.PathLike[str],
        *,
        name: str,
        project: str,
        residency: str | list[str] | None = None,
        data_class: str | None = None,
        license: str | None = None,
        description: str | None = None,
        progress: Callable[[DatasetProgress], None] | None = None,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> dict[str, Any]:
        """Upload a file or folder as the next version of the data set `name` of `project`
        (its first version creates it, with these terms). An upload that was interrupted
        goes on where the server stopped. Returns the data set with the new version and
        its files (each with its sha256)."""
        packed = pack_dataset(Path(path))
        try:
            body = {"project": project, "name": name, "size": packed.size,
                    "sha256": packed.sha256, "residency": residency, "class": data_class,
                    "license": license, "description": description}  # fmt: skip
            upload = self._post("/dataset-uploads", body)
            self._send_rest(upload, packed, progress, chunk_bytes)
            return cast(
                dict[str, Any], self._json("POST", f"/dataset-uploads/{upload['id']}/commit")
            )
        finally:
            packed.file.close()

    def _send_rest(
        self,
        upload: dict[str, Any],
        packed: PackedDataset,
        progress: Callable[[DatasetProgress], None] | None,
        chunk_bytes: int,
    ) -> None:
        uid, total = upload["id"], packed.size
        offset = first = int(upload["received"])
        if progress is not None:
            progress(DatasetProgress(offset, total, first))
        while offset < total:
            packed.file.seek(offset)
            data = packed.file.read(min(chunk_bytes, total - offset))
            headers = {
                "Content-Type": "application/octet-stream",
                "Content-Range": f"bytes {offset}-{offset + len(data) - 1}/{total}",
            }
            response = self._send("PUT", f"/dataset-uploads/{uid}", content=data, headers=headers)
            if response.status_code == 409:  # the server has another offset: go on from it
                offset = self.upload_offset(uid)
                continue
            if not response.is_success:
                raise ApiError.from_response(response)
            offset = int(response.json()["received"])
            if progress is not None:
                progress(DatasetProgress(offset, total, first))

    def upload_offset(self, upload_id: str) -> int:
        """How many bytes of an upload the server has."""
        response = self._ok("HEAD", f"/dataset-uploads/{upload_id}")
        return int(response.headers["Upload-Offset"])

    def datasets(self, project: str | None = None) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], self._get("/datasets", project_id=project))

    def dataset(self, dataset: int | str, version: int | None = None) -> dict[str, Any]:
        """One data set (by id, or by name among yours), with the files of `version`
        (default: the latest)."""
        found = self.dataset_id(dataset)
        return cast(dict[str, Any], self._get(f"/datasets/{found}", version=version))

    def dataset_id(self, dataset: int | str) -> int:
        if isinstance(dataset, int) or str(dataset).isdigit():
            return int(dataset)
        named = [d for d in self.datasets() if d["name"] == dataset]
        if len(named) != 1:
            what = "no data set" if not named else "several data sets (give the id)"
            raise JobSpecError(f"{what} named {dataset}", "dataset")
        return int(named[0]["id"])

    def croissant(self, dataset: int | str, version: int | None = None) -> dict[str, Any]:
        found = self.dataset_id(dataset)
        return cast(dict[str, Any], self._get(f"/datasets/{found}/croissant.json", version=version))

    def delete_dataset(self, dataset: int | str, version: int | None = None) -> dict[str, Any]:
        found = self.dataset_id(dataset)
        params = {"version": version} if version is not None else {}
        return cast(dict[str, Any], self._json("DELETE", f"/datasets/{found}", params=params))

    def download_dataset(
        self,
        dataset: int | str,
        folder: str | os.PathLike[str],
        *,
        version: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> dict[str, Any]:
        """Write a version's files under `folder`, each checked against its sha256
        (ApiError-free failure: ValueError naming the file). Returns the data set."""
        shown = self.dataset(dataset, version)
        root = Path(folder)
        total = sum(f["size"] for f in shown["files"])
        done = 0
        for entry in shown["files"]:
            target = root / entry["path"]
            if not target.resolve().is_relative_to(root.resolve()):
                raise ValueError(f"{entry['path']!r} leaves {root}")
            target.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            with target.open("wb") as out:
                for block in self._file_blocks(shown, entry["path"]):
                    digest.update(block)
                    out.write(block)
                    done += len(block)
                    if progress is not None:
                        progress(done, total)
            if digest.hexdigest() != entry["sha256"]:
                raise ValueError(f"{entry['path']}: the bytes received do not match its sha256")
        return shown

    def _file_blocks(self, shown: dict[str, Any], path: str) -> Iterator[bytes]:
        url = f"/datasets/{shown['id']}/versions/{shown['version']}/file"
        with self._http.stream("GET", url, params={"path": path}) as response:
            if not response.is_success:
                response.read()
                raise ApiError.from_response(response)
            yield from response.iter_bytes(_BLOCK)
