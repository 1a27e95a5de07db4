"""Jobs: submit (spec, workdir packing, upload), list, watch, logs, cancel, outputs, usage."""

from __future__ import annotations

import codecs
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from fabbrica.client._archive import extract_outputs
from fabbrica.client._errors import ApiError, JobSpecError
from fabbrica.client._http import Http
from fabbrica.client._upload import multipart, pack_workdir, resolve_workdir
from fabbrica.client.types import ArrayCancelled, Job, UsageRow
from fabbrica.core.jobspec import JobSpec, SpecError, parse_job_spec, spec_from_data

#: The states a job ends in; it changes no more once it has one of them.
FINISHED_STATES = frozenset({"succeeded", "failed", "cancelled", "timed_out"})


@dataclass(frozen=True)
class UploadProgress:
    """Passed to `submit(progress=...)` as the upload goes: bytes `sent` of `total`."""

    workdir: Path
    sent: int
    total: int


@dataclass(frozen=True)
class LogChunk:
    """One read of a job's log: `data` from the offset asked for, the offset to ask for
    next, and the job's state when it was read (None if the server did not say)."""

    data: bytes
    next_offset: int
    state: str | None


@dataclass(frozen=True)
class Outputs:
    """Where `download` put a job's outputs, and the archive's entries (files, folders)."""

    folder: Path
    names: list[str]


class JobsApi(Http):
    def submit(
        self,
        spec: str | os.PathLike[str] | Mapping[str, Any],
        *,
        project: str | None = None,
        workdir: str | os.PathLike[str] | None = None,
        upload: bool = True,
        progress: Callable[[UploadProgress], None] | None = None,
    ) -> Job:
        """Submit a job and return it (queued, usually).

        `spec` is the path of a job spec file (YAML or JSON), or the spec as a dict
        (`{"name": ..., "run": ..., "resources": {...}}`; docs/sdk.md shows the fields). The spec is
        checked here first: JobSpecError names the field at fault before anything is sent.
        `project` overrides the spec's (without either, your only project is taken).

        The workdir is packed (a gzipped tar, without .git, .venv, __pycache__ ...) and
        uploaded with the spec: `workdir` if given, else the spec's `workdir` relative to
        the spec file's folder (for a dict: to the current directory). A spec file's
        `workdir` must resolve inside the spec's folder (symlinks followed), so that a spec
        cannot send a folder its author never meant to share: JobSpecError otherwise, unless
        the folder is named with `workdir`. `upload=False` sends the spec alone. `progress`
        is called as the upload goes.
        """
        source, text, parsed, base = _read_spec(spec)
        if not upload:
            body: dict[str, Any] = {
                "spec": text if isinstance(spec, str | os.PathLike) else dict(spec)
            }
            if project:
                body["project"] = project
            return cast(Job, self._json("POST", "/jobs", json=body))
        folder = resolve_workdir(
            source, base, parsed.workdir, workdir, inside=isinstance(spec, str | os.PathLike)
        )
        try:
            archive = pack_workdir(folder)
        except OSError as exc:  # an unreadable file in the workdir
            raise JobSpecError(f"cannot pack {folder}: {exc}", "workdir") from exc
        fields = {"spec": text}
        if project:
            fields["project"] = project
        content_type, payload = multipart(fields, archive)
        return cast(
            Job,
            self._json(
                "POST",
                "/jobs",
                content=_chunks(payload, folder, progress),
                headers={"Content-Type": content_type, "Content-Length": str(len(payload))},
            ),
        )

    def submit_batch(
        self, specs: list[Mapping[str, Any] | str], *, project: str | None = None
    ) -> list[Job]:
        """Submit several jobs (specs as dicts or YAML text, without workdirs) in one
        request; all are queued or none (ApiError names `jobs.N.field`)."""
        items: list[dict[str, Any]] = []
        for spec in specs:
            item: dict[str, Any] = {"spec": spec if isinstance(spec, str) else dict(spec)}
            if project:
                item["project"] = project
            items.append(item)
        return cast(list[Job], self._json("POST", "/job-batches", json={"jobs": items}))

    def jobs(self, project_id: str | None = None, *, array_id: int | None = None) -> list[Job]:
        """Jobs of your projects (staff: all), newest first; with `array_id`, the tasks of
        that array in index order."""
        return cast(list[Job], self._get("/jobs", project_id=project_id, array_id=array_id))

    def cancel_array(self, job_id: int) -> ArrayCancelled:
        """Cancel every unfinished task of the array `job_id` belongs to."""
        return cast(ArrayCancelled, self._post(f"/jobs/{job_id}/cancel-array"))

    def job(self, job_id: int) -> Job:
        """One job: its state, where it runs, why it waits, what it charged."""
        return cast(Job, self._get(f"/jobs/{job_id}"))

    def cancel(self, job_id: int) -> Job:
        """Ask for a job to be cancelled: a queued job is at once, a running one within a
        few seconds (follow it with `wait`)."""
        return cast(Job, self._post(f"/jobs/{job_id}/cancel"))

    def wait(self, job_id: int, *, timeout: float | None = None, poll: float = 0.5) -> Job:
        """Poll a job until it has finished (`FINISHED_STATES`) and return it; after
        `timeout` seconds return it as it is (check its `state`)."""
        began = time.monotonic()
        while True:
            job = self.job(job_id)
            if job["state"] in FINISHED_STATES:
                return job
            if timeout is not None and time.monotonic() - began > timeout:
                return job
            time.sleep(poll)

    def read_log(self, job_id: int, offset: int = 0) -> LogChunk:
        """One read of a job's log from byte `offset` (the server sends at most 1 MiB)."""
        response = self._ok("GET", f"/jobs/{job_id}/logs", params={"offset": offset})
        data = response.content
        next_offset = int(response.headers.get("X-Next-Offset", offset + len(data)))
        return LogChunk(data, next_offset, response.headers.get("X-Job-State"))

    def logs(self, job_id: int) -> str:
        """A job's whole output so far, as text (bytes that are not UTF-8 become U+FFFD)."""
        offset, data = 0, b""
        while True:
            chunk = self.read_log(job_id, offset)
            data += chunk.data
            if not chunk.data or chunk.next_offset <= offset:
                return data.decode("utf-8", errors="replace")
            offset = chunk.next_offset

    def follow(self, job_id: int, *, poll: float = 0.5) -> Iterator[str]:
        """A job's output as it comes, in pieces of text, until the job has finished and
        all of it is read: `for text in client.follow(job["id"]): print(text, end="")`.
        Then `client.job(job_id)` says how it ended."""
        offset = 0
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        while True:
            job = self.job(job_id)
            if job["state"] == "running" or job["state"] in FINISHED_STATES:
                while (chunk := self._log_or_none(job_id, offset)) is not None:
                    offset = chunk.next_offset
                    if text := decoder.decode(chunk.data):
                        yield text
            if job["state"] in FINISHED_STATES:
                if rest := decoder.decode(b"", final=True):
                    yield rest
                return
            time.sleep(poll)

    def _log_or_none(self, job_id: int, offset: int) -> LogChunk | None:
        """The next piece of the log, or None when there is nothing new (or no log yet)."""
        try:
            chunk = self.read_log(job_id, offset)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return chunk if chunk.data and chunk.next_offset > offset else None

    def outputs(self, job_id: int) -> bytes:
        """A job's outputs (the spec's `outputs`) as a gzipped tar archive."""
        return self._ok("GET", f"/jobs/{job_id}/outputs").content

    def download(self, job_id: int, to: str | os.PathLike[str] | None = None) -> Outputs:
        """Download a job's outputs and unpack them into folder `to` (default ./job-ID,
        made if missing). All or nothing: the archive is checked before anything is
        written, and one entry that would land outside the folder (an absolute or escaping
        path or link), a device or a FIFO refuses the whole download (OutputsError naming
        it; nothing is written, not even the folder)."""
        archive = self.outputs(job_id)
        target = Path(to) if to is not None else Path(f"job-{job_id}")
        names = extract_outputs(archive, target, source=f"the outputs of job {job_id}")
        return Outputs(target, names)

    def usage(self, by: str = "project", *, project_id: str | None = None) -> list[UsageRow]:
        """Charged GPU-hours and job counts, grouped by project, factory, org, country,
        sector or mode."""
        return cast(list[UsageRow], self._get("/usage", by=by, project_id=project_id))


def _read_spec(spec: str | os.PathLike[str] | Mapping[str, Any]) -> tuple[str, str, JobSpec, Path]:
    """The spec's name (for messages), its text as sent, the parsed spec, and the folder its
    workdir is relative to."""
    if isinstance(spec, Mapping):
        try:
            return "job spec", json.dumps(dict(spec)), spec_from_data(dict(spec)), Path.cwd()
        except SpecError as exc:
            raise JobSpecError(f"job spec: {exc}", exc.field) from exc
        except (TypeError, ValueError) as exc:  # not JSON-serialisable
            raise JobSpecError(f"job spec: {exc}") from exc
    file = Path(spec)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise JobSpecError(f"cannot read {file}: {exc.strerror}") from exc
    try:
        parsed = parse_job_spec(data, str(file))
    except SpecError as exc:
        raise JobSpecError(f"{file}: {exc}", exc.field) from exc
    return str(file), data.decode("utf-8"), parsed, file.parent


def _chunks(
    body: bytes, workdir: Path, progress: Callable[[UploadProgress], None] | None
) -> Iterator[bytes]:
    step = 256 * 1024
    for start in range(0, len(body), step):
        chunk = body[start : start + step]
        if progress is not None:
            progress(UploadProgress(workdir, start + len(chunk), len(body)))
        yield chunk
