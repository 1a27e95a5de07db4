"""`fabbrica run`, `jobs`, `job`, `logs`, `cancel`, `download`, `usage`."""

from __future__ import annotations

import io
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TransferSpeedColumn,
)

from fabbrica.cli.archive import extract_outputs
from fabbrica.cli.client import client
from fabbrica.cli.errors import BAD_INPUT, FAILURE, CliError
from fabbrica.cli.helptext import spec_help
from fabbrica.cli.output import count, emit, err_console, gpu_hours, print_table, say, when
from fabbrica.cli.params import JsonOpt, ProjectFilterOpt
from fabbrica.core.jobspec import SpecError, parse_job_spec

SKIP = {".git", "__pycache__", ".venv", ".mypy_cache", ".pytest_cache", "node_modules"}
INTERRUPTED = 130  # as a shell reports Ctrl-C
FINISHED = {"succeeded", "failed", "cancelled", "timed_out"}


def _pack(workdir: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(workdir.rglob("*")):
            relative = path.relative_to(workdir)
            if SKIP & set(relative.parts) or path.is_symlink() or not path.is_file():
                continue
            tar.add(path, arcname=str(relative))
    return buffer.getvalue()


def _multipart(fields: dict[str, str], archive: bytes) -> tuple[str, bytes]:
    boundary = uuid.uuid4().hex
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


def _chunks(body: bytes, progress: Progress, task: Any) -> Iterator[bytes]:
    step = 256 * 1024
    for start in range(0, len(body), step):
        chunk = body[start : start + step]
        progress.advance(task, len(chunk))
        yield chunk


def run(
    file: Annotated[Path, typer.Argument(help="The job spec (YAML or JSON).")],
    project: Annotated[
        str | None, typer.Option("--project", metavar="PROJECT_ID", help="Overrides the spec's.")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Return when the job ends.")] = False,
    follow: Annotated[bool, typer.Option("--follow", help="Stream the job's output.")] = False,
    workdir_opt: Annotated[
        Path | None,
        typer.Option(
            "--workdir",
            metavar="DIR",
            help="Upload this folder instead of the spec's `workdir` (which must stay inside "
            "the spec's folder).",
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Submit a job: packs and uploads its workdir, prints the job."""
    try:
        text = file.read_bytes()
        spec = parse_job_spec(text, str(file))
    except OSError as exc:
        raise CliError(f"cannot read {file}: {exc.strerror}", BAD_INPUT) from exc
    except SpecError as exc:
        raise CliError(f"{file}: {exc}", BAD_INPUT) from exc
    workdir = _workdir(file, spec.workdir, workdir_opt)
    try:
        archive = _pack(workdir)
    except OSError as exc:  # an unreadable file in the workdir
        raise CliError(f"cannot pack {workdir}: {exc}", BAD_INPUT) from exc
    fields = {"spec": text.decode("utf-8")}
    if project:
        fields["project"] = project
    content_type, body = _multipart(fields, archive)
    api = client()
    with Progress(
        TextColumn("{task.description}", markup=False),  # a folder name is not markup
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=err_console,
        transient=True,
    ) as progress:
        task = progress.add_task(f"uploading {workdir.name}", total=len(body))
        job = api.request(
            "POST",
            "/jobs",
            content=_chunks(body, progress, task),
            headers={"Content-Type": content_type, "Content-Length": str(len(body))},
        )
    if follow:
        job = _follow(job["id"])
    elif wait:
        job = _wait(job["id"])
    emit(job, json_out)
    if (wait or follow) and job["state"] != "succeeded":
        raise typer.Exit(FAILURE)


run.__doc__ = f"""Submit a job: packs and uploads its workdir, prints the job.

Validates the spec (exit 2 naming the field), takes the project from `--project`, the spec's
`project`, or else the one project you belong to, packs the workdir (`.git`, `.venv`,
`__pycache__` left out), uploads it with a progress bar and prints the job. A `workdir` that
resolves outside the spec's folder (`../../etc`) is refused (exit 2) unless `--workdir`
names the folder on the command line. The server refuses (exit 2, with the numbers) a job that
can never run or whose worst case (GPUs x time limit under the billing rule) exceeds what every
eligible allocation has left. `--wait` returns when the job ends, `--follow` streams its
output; with either, the exit code is 1 unless the job succeeded, and Ctrl-C stops waiting
(exit 130) while the job runs on.

{spec_help()}

Durations are written `30m`, `2h`, `1h30m`, `1d`, `01:30:00`; see `examples/digits/job.yaml`.
"""


def _workdir(spec_file: Path, written: str, given: Path | None) -> Path:
    """The folder to upload: `--workdir` as given, else the spec's `workdir`, which must
    resolve inside the spec's own folder (symlinks followed), so that a spec cannot send a
    folder its author never meant to share."""
    if given is not None:
        workdir = given.resolve()
        if not workdir.is_dir():
            raise CliError(f"--workdir: {given} is not a directory", BAD_INPUT)
        return workdir
    home = spec_file.parent.resolve()
    workdir = (home / written).resolve()
    if not workdir.is_relative_to(home):
        raise CliError(
            f"{spec_file}: workdir {written!r} resolves to {workdir}, outside the spec's folder "
            f"{home}; move the spec, or pass --workdir {workdir} to upload it anyway",
            BAD_INPUT,
        )
    if not workdir.is_dir():
        raise CliError(f"{spec_file}: workdir {written!r} is not a directory", BAD_INPUT)
    return workdir


@contextmanager
def _interruptible(job_id: int) -> Iterator[None]:
    """Ctrl-C while waiting or following: stop waiting (exit 130); the job runs on."""
    try:
        yield
    except KeyboardInterrupt:
        say(f"stopped waiting; job {job_id} runs on (fabbrica job {job_id})", err=True)
        raise typer.Exit(INTERRUPTED) from None


def _wait(job_id: int, timeout: float | None = None) -> dict[str, Any]:
    with _interruptible(job_id):
        return _poll(job_id, timeout)


def _poll(job_id: int, timeout: float | None) -> dict[str, Any]:
    api, began = client(), time.monotonic()
    while True:
        job: dict[str, Any] = api.get(f"/jobs/{job_id}")
        if job["state"] in FINISHED:
            return job
        if timeout is not None and time.monotonic() - began > timeout:
            return job
        time.sleep(0.5)


def _follow(job_id: int) -> dict[str, Any]:
    with _interruptible(job_id):
        return _stream(job_id)


def _stream(job_id: int) -> dict[str, Any]:
    api, offset = client(), 0
    while True:
        job: dict[str, Any] = api.get(f"/jobs/{job_id}")
        if job["state"] in ("running", *FINISHED):
            offset = _print_log(api, job_id, offset)
        if job["state"] in FINISHED:
            while (after := _print_log(api, job_id, offset)) > offset:
                offset = after  # the rest of the log (1 MiB a request)
            return job
        time.sleep(0.5)


def _print_log(api: Any, job_id: int, offset: int) -> int:
    response = api.raw("GET", f"/jobs/{job_id}/logs", params={"offset": offset})
    if response.status_code == 404:
        return offset
    sys.stdout.write(response.content.decode("utf-8", errors="replace"))
    sys.stdout.flush()
    return int(response.headers.get("X-Next-Offset", offset))


def jobs(
    project: ProjectFilterOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List jobs, newest first.

    Jobs of your projects, newest first, with the reason each waiting job waits.
    """
    rows = client().get("/jobs", project_id=project)
    emit(rows, json_out, _job_table)


def _job_table(rows: list[dict[str, Any]]) -> None:
    print_table(
        count(len(rows), "job"),
        [
            ("id", lambda r: r["id"]),
            ("name", lambda r: r["name"]),
            ("state", lambda r: r["state"]),
            ("factory", lambda r: r["factory"]),
            ("GPUs", lambda r: r["gpus"]),
            ("GPU-h", lambda r: gpu_hours(r["gpu_hours"], unit=False)),
            ("submitted", lambda r: when(r["submitted_at"])),
            ("reason", lambda r: r["reason"]),
        ],
        rows,
    )


def job(job_id: int, json_out: JsonOpt = False) -> None:
    """One job: state, where it runs, why it waits, what it charged.

    One job: `id`, `state`, `reason`, `factory`, `partition`, `gpus`, `gpu_hours` (charged),
    `submitted_at`, `started_at`, `ended_at`, `exit_code`.
    """
    emit(client().get(f"/jobs/{job_id}"), json_out)


def logs(
    job_id: int,
    follow: Annotated[bool, typer.Option("--follow", help="Keep printing until it ends.")] = False,
) -> None:
    """Print a job's output.

    The job's output (stdout and stderr).
    """
    api = client()
    if follow:
        _follow(job_id)
        return
    offset, data = 0, b""
    while True:  # the server sends at most 1 MiB a request: read on until it has no more
        response = api.raw("GET", f"/jobs/{job_id}/logs", params={"offset": offset})
        if response.status_code != 200:
            api.check(response)
        data += response.content
        next_offset = int(response.headers.get("X-Next-Offset", offset + len(response.content)))
        if not response.content or next_offset <= offset:
            break
        offset = next_offset
    sys.stdout.write(data.decode("utf-8", errors="replace"))


def cancel(job_id: int, json_out: JsonOpt = False) -> None:
    """Cancel a job; waits (up to 10 s) until it has stopped.

    Cancels a job and waits (up to 10 s) until it has stopped; charged for the time used only.
    """
    api = client()
    job_data = api.post(f"/jobs/{job_id}/cancel", {})
    if job_data["state"] not in FINISHED:
        job_data = _wait(job_id, timeout=10)
    emit(job_data, json_out)


def download(
    job_id: int,
    to: Annotated[
        Path | None, typer.Option("--to", metavar="DIR", help="Folder (default ./job-ID).")
    ] = None,
) -> None:
    """Download a job's outputs into a folder (default `./job-ID`).

    The archive is checked before anything is written: a member that would land outside the
    folder (an absolute or escaping path or link), a device or a FIFO refuses the whole
    download (exit 1, naming the member), and nothing is extracted.
    """
    api = client()
    response = api.raw("GET", f"/jobs/{job_id}/outputs")
    api.check(response)
    target = to or Path(f"job-{job_id}")
    entries = extract_outputs(response.content, target, source=f"the outputs of job {job_id}")
    say(f"{entries} entries from job {job_id} in {target}", err=True)


def usage(
    project: ProjectFilterOpt = None,
    by: Annotated[
        str,
        typer.Option(
            "--by",
            metavar="project|factory|org|country|sector|mode",
            help="project, factory, org, country, sector or mode.",
        ),
    ] = "project",
    json_out: JsonOpt = False,
) -> None:
    """Charged GPU-hours and job counts, grouped."""
    rows = client().get("/usage", by=by, project_id=project)
    emit(rows, json_out, lambda rows: _usage_table(rows, by))


def _usage_table(rows: list[dict[str, Any]], by: str) -> None:
    print_table(
        f"GPU-hours by {by}",
        [
            ("key", lambda r: r["key"]),
            ("jobs", lambda r: r["jobs"]),
            ("GPU-hours", lambda r: gpu_hours(r["gpu_hours"], unit=False)),
        ],
        rows,
    )
