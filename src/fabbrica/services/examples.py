"""The example jobs shipped with Fabbrica (examples/ of the source tree, or of the wheel),
packed as a workdir archive so that the portal can start one in a click."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from fabbrica.core.errors import NotFound
from fabbrica.core.jobspec import JobSpec, parse_job_spec

_HERE = Path(__file__).resolve().parent.parent  # the fabbrica package
_PLACES = (_HERE / "examples", _HERE.parent.parent / "examples")  # wheel, source checkout


def _root() -> Path | None:
    return next((p for p in _PLACES if p.is_dir()), None)


def names() -> list[str]:
    root = _root()
    if root is None:
        return []
    return sorted(p.parent.name for p in root.glob("*/job.yaml"))


def load(name: str) -> tuple[JobSpec, bytes]:
    """The example's spec and its workdir as a gzipped tar (job.yaml left out)."""
    root = _root()
    if root is None or name not in names():
        raise NotFound(f"no example {name!r}", field="example")
    folder = root / name
    spec = parse_job_spec((folder / "job.yaml").read_text(), source=f"examples/{name}/job.yaml")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.name != "job.yaml" and "__pycache__" not in path.parts:
                tar.add(path, arcname=str(path.relative_to(folder)), recursive=False)
    return spec, buffer.getvalue()
