"""A job's upload: which folder, which of its files, packed how, in what body. The standard
library only: the CLI's quick `fabbrica run` (fabbrica.cli.quick_run) sends a job with
these and without httpx, and the SDK's `submit` with them too."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

from fabbrica.client._errors import JobSpecError

#: Folders never packed into an upload, wherever they are in the workdir.
SKIPPED_FOLDERS = frozenset(
    {".git", "__pycache__", ".venv", ".mypy_cache", ".pytest_cache", "node_modules"}
)


def workdir_files(workdir: Path) -> list[tuple[Path, str]]:
    """The files of `workdir` an upload holds (no symlinks, no SKIPPED_FOLDERS), in order,
    each with its name in the archive."""
    found = []
    for path in sorted(workdir.rglob("*")):
        relative = path.relative_to(workdir)
        if SKIPPED_FOLDERS & set(relative.parts) or path.is_symlink() or not path.is_file():
            continue
        found.append((path, str(relative)))
    return found


def pack_workdir(workdir: Path, files: list[tuple[Path, str]] | None = None) -> bytes:
    """A gzipped tar of the files under `workdir` (no symlinks, no SKIPPED_FOLDERS); `files`
    when they are already listed (`workdir_files`)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path, name in workdir_files(workdir) if files is None else files:
            tar.add(path, arcname=name)
    return buffer.getvalue()


def resolve_workdir(
    source: str, base: Path, written: str, given: str | os.PathLike[str] | None, *, inside: bool
) -> Path:
    """The folder to upload: `given` as it is, else the spec's `workdir` relative to `base`,
    which for a spec file (`inside`) must resolve inside the spec's own folder."""
    if given is not None:
        folder = Path(given).resolve()
        if not folder.is_dir():
            raise JobSpecError(f"workdir: {given} is not a directory", "workdir")
        return folder
    home = base.resolve()
    folder = (home / written).resolve()
    if inside and not folder.is_relative_to(home):
        raise JobSpecError(
            f"{source}: workdir {written!r} resolves to {folder}, outside the spec's folder "
            f"{home}; move the spec, or name the folder to upload it anyway (`workdir=`, "
            f"`fabbrica run --workdir {folder}`)",
            "workdir",
        )
    if not folder.is_dir():
        raise JobSpecError(f"{source}: workdir {written!r} is not a directory", "workdir")
    return folder


def multipart(fields: dict[str, str], archive: bytes) -> tuple[str, bytes]:
    """The content type and body of a submission: the text `fields`, then the archive as
    the file `workdir`."""
    boundary = os.urandom(16).hex()
    parts = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + value.encode()
            + b"\r\n"
        )
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="workdir"; '
        f'filename="workdir.tar.gz"\r\nContent-Type: application/gzip\r\n\r\n'.encode()
        + archive
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return f"multipart/form-data; boundary={boundary}", b"".join(parts)
