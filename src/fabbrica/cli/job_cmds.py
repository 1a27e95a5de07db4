"""`fabbrica run`, `jobs`, `job`, `logs`, `cancel`, `download`, `usage`."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TransferSpeedColumn

from fabbrica.cli.access_cmds import JsonOpt, show
from fabbrica.cli.client import client
from fabbrica.cli.errors import FAILURE
from fabbrica.cli.output import count, err_console, print_json, print_table, when
from fabbrica.client import FINISHED_STATES as FINISHED
from fabbrica.client import UploadProgress
from fabbrica.client.types import Job


def _uploading(progress: Progress) -> Callable[[UploadProgress], None]:
    """A progress bar of the workdir's upload."""
    task: list[TaskID] = []

    def update(sent: UploadProgress) -> None:
        if not task:
            task.append(progress.add_task(f"uploading {sent.workdir.name}", total=sent.total))
        progress.update(task[0], completed=sent.sent)

    return update


def run(
    file: Annotated[Path, typer.Argument(help="The job spec (YAML or JSON).")],
    project: Annotated[str | None, typer.Option("--project", help="Overrides the spec's.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Return when the job ends.")] = False,
    follow: Annotated[bool, typer.Option("--follow", help="Stream the job's output.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Submit a job: packs and uploads its workdir, prints the job."""
    api = client()
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=err_console,
        transient=True,
    ) as progress:
        job = api.submit(file, project=project, progress=_uploading(progress))
    if follow:
        job = _follow(job["id"])
    elif wait:
        job = api.wait(job["id"])
    show(job, json_out)
    if (wait or follow) and job["state"] != "succeeded":
        raise typer.Exit(FAILURE)


def _follow(job_id: int) -> Job:
    """Print the job's output as it comes; the job once it has finished."""
    api = client()
    for text in api.follow(job_id):
        sys.stdout.write(text)
        sys.stdout.flush()
    return api.job(job_id)


def jobs(
    project: Annotated[str | None, typer.Option("--project", help="One project's.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """List jobs, newest first."""
    rows = client().jobs(project)
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
    show(client().job(job_id), json_out)


def logs(
    job_id: int,
    follow: Annotated[bool, typer.Option("--follow", help="Keep printing until it ends.")] = False,
) -> None:
    """Print a job's output."""
    if follow:
        _follow(job_id)
        return
    sys.stdout.write(client().logs(job_id))


def cancel(job_id: int, json_out: JsonOpt = False) -> None:
    """Cancel a job; waits (up to 10 s) until it has stopped."""
    api = client()
    job_data = api.cancel(job_id)
    if job_data["state"] not in FINISHED:
        job_data = api.wait(job_id, timeout=10)
    show(job_data, json_out)


def download(
    job_id: int,
    to: Annotated[Path | None, typer.Option("--to", help="Folder (default ./job-ID).")] = None,
) -> None:
    """Download a job's outputs into a folder."""
    got = client().download(job_id, to)
    err_console.print(f"{len(got.names)} entries from job {job_id} in {got.folder}")


def usage(
    project: Annotated[str | None, typer.Option("--project", help="One project's.")] = None,
    by: Annotated[
        str, typer.Option("--by", help="project, factory, org, country, sector or mode.")
    ] = "project",
    json_out: JsonOpt = False,
) -> None:
    """Charged GPU-hours, grouped."""
    rows = client().usage(by, project_id=project)
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
