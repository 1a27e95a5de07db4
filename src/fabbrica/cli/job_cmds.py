"""`fabbrica run`, `jobs`, `job`, `logs`, `cancel`, `download`, `usage`."""

from __future__ import annotations

import io
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from fabbrica.cli.access_cmds import JsonOpt, show
from fabbrica.cli.client import client
from fabbrica.cli.errors import BAD_INPUT, FAILURE, CliError
from fabbrica.cli.output import count, err_console, print_json, print_table, when
from fabbrica.core.jobspec import SpecError, parse_job_spec

SKIP = {".git", "__pycache__", ".venv", ".mypy_cache", ".pytest_cache", "node_modules"}
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
    project: Annotated[str | None, typer.Option("--project", help="Overrides the spec's.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Return when the job ends.")] = False,
    follow: Annotated[bool, typer.Option("--follow", help="Stream the job's output.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Submit a job: packs and uploads its workdir, prints the job."""
    try:
        spec = parse_job_spec(file.read_bytes(), str(file))
    except OSError as exc:
        raise CliError(f"cannot read {file}: {exc.strerror}", BAD_INPUT) from exc
    except SpecError as exc:
        raise CliError(f"{file}: {exc}", BAD_INPUT) from exc
    workdir = (file.parent / spec.workdir).resolve()
    if not workdir.is_dir():
        raise CliError(f"{file}: workdir {spec.workdir!r} is not a directory", BAD_INPUT)
    archive = _pack(workdir)
    fields = {"spec": file.read_text(encoding="utf-8")}
    if project:
        fields["project"] = project
    content_type, body = _multipart(fields, archive)
    api = client()
    with Progress(
        "[progress.description]{task.description}",
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
    show(job, json_out)
    if (wait or follow) and job["state"] != "succeeded":
        raise typer.Exit(FAILURE)


def _wait(job_id: int, timeout: float | None = None) -> dict[str, Any]:
    api, began = client(), time.monotonic()
    while True:
        job: dict[str, Any] = api.get(f"/jobs/{job_id}")
        if job["state"] in FINISHED:
            return job
        if timeout is not None and time.monotonic() - began > timeout:
            return job
        time.sleep(0.5)


def _follow(job_id: int) -> dict[str, Any]:
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
    project: Annotated[str | None, typer.Option("--project", help="One project's.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """List jobs, newest first."""
    rows = client().get("/jobs", project_id=project)
    if json_out:
        print_json(rows)
        return
    print_table(
        count(len(rows), "job"),
        [
            ("id", lambda r: r["id"]),
            ("name", lambda r: r["name"]),
            ("state", lambda r: r["state"]),
            ("factory", lambda r: r["factory"]),
            ("GPUs", lambda r: r["gpus"]),
            ("GPU-h", lambda r: "" if r["gpu_hours"] is None else f"{r['gpu_hours']:.4f}"),
            ("submitted", lambda r: when(r["submitted_at"])),
            ("reason", lambda r: r["reason"]),
        ],
        rows,
    )


def job(job_id: int, json_out: JsonOpt = False) -> None:
    """One job: state, where it runs, why it waits, what it charged."""
    show(client().get(f"/jobs/{job_id}"), json_out)


def logs(
    job_id: int,
    follow: Annotated[bool, typer.Option("--follow", help="Keep printing until it ends.")] = False,
) -> None:
    """Print a job's output."""
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
    """Cancel a job; waits (up to 10 s) until it has stopped."""
    api = client()
    job_data = api.post(f"/jobs/{job_id}/cancel", {})
    if job_data["state"] not in FINISHED:
        job_data = _wait(job_id, timeout=10)
    show(job_data, json_out)


def download(
    job_id: int,
    to: Annotated[Path | None, typer.Option("--to", help="Folder (default ./job-ID).")] = None,
) -> None:
    """Download a job's outputs into a folder."""
    api = client()
    response = api.raw("GET", f"/jobs/{job_id}/outputs")
    api.check(response)
    target = to or Path(f"job-{job_id}")
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as tar:
        names = tar.getnames()
        tar.extractall(target, filter="data")
    err_console.print(f"{len(names)} entries from job {job_id} in {target}")


def usage(
    project: Annotated[str | None, typer.Option("--project", help="One project's.")] = None,
    by: Annotated[
        str, typer.Option("--by", help="project, factory, org, country, sector or mode.")
    ] = "project",
    json_out: JsonOpt = False,
) -> None:
    """Charged GPU-hours, grouped."""
    rows = client().get("/usage", by=by, project_id=project)
    if json_out:
        print_json(rows)
        return
    print_table(
        f"GPU-hours by {by}",
        [
            ("key", lambda r: r["key"]),
            ("jobs", lambda r: r["jobs"]),
            ("GPU-hours", lambda r: f"{r['gpu_hours']:.4f}"),
        ],
        rows,
    )
