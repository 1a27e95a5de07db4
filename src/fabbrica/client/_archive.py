"""Unpacking a job's outputs safely: all or nothing, never outside the target folder."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from fabbrica.client._errors import OutputsError


def extract_outputs(data: bytes, target: Path, *, source: str = "the outputs") -> list[str]:
    """Unpack a gzipped tar into `target` and return the names of its entries.

    Every member is checked first with the `data` filter (no absolute or escaping paths or
    links, no devices or FIFOs, no set-uid bits); one refused member refuses the whole
    archive, named in the error, before anything is written (not even `target` is created).
    Raises OutputsError.
    """
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            members = tar.getmembers()
            destination = str(target.resolve())
            for member in members:
                try:
                    tarfile.data_filter(member, destination)
                except tarfile.FilterError as exc:
                    raise OutputsError(
                        f"{source}: refused {member.name!r} ({exc}); nothing was extracted",
                        member.name,
                    ) from exc
            target.mkdir(parents=True, exist_ok=True)
            tar.extractall(target, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise OutputsError(f"{source}: cannot unpack into {target}: {exc}") from exc
    return [member.name for member in members]
