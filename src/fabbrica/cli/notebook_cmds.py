"""`fabbrica notebook`, `notebook list`, `notebook stop`: JupyterLab as a job."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.status import Status

from fabbrica.cli.client import client
from fabbrica.cli.errors import FAILURE, CliError
from fabbrica.cli.output import emit, err_console, gpu_hours, print_table, say, when
from fabbrica.cli.params import JsonOpt, positive
from fabbrica.client import FINISHED_STATES

READY_LIMIT_S = 600.0  # how long `fabbrica notebook` waits for JupyterLab to answer

notebook_app = typer.Typer(invoke_without_command=True)


@notebook_app.callback()
def notebook(
    ctx: typer.Context,
    project: Annotated[
        str | None, typer.Option("--project", metavar="PROJECT_ID", help="Charged to it.")
    ] = None,
    factory: Annotated[
        str | None, typer.Option("--factory", metavar="FACTORY", help="Run it there.")
    ] = None,
    gpus: Annotated[int, typer.Option("--gpus", min=1, max=16384, help="GPUs.")] = 1,
    hours: Annotated[
        float, typer.Option("--hours", callback=positive, help="Its time limit, in hours.")
    ] = 4.0,
    dataset: Annotated[
        list[str] | None,
        typer.Option("--dataset", metavar="NAME", help="A data set to mount read-only."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Start a notebook: waits until JupyterLab answers and prints its URL.

    Starts JupyterLab as a job of the project (placed and charged to its allocation like
    any job), waits until it is ready and prints its address on the Fabbrica server, which
    you open signed in to the portal. It ends when idle for the server's
    FABBRICA_NOTEBOOK_IDLE seconds, at its time limit, or with `fabbrica notebook stop`;
    what it saved is the job's outputs (`fabbrica download JOB`).
    """
    if ctx.invoked_subcommand is not None:
        return
    api = client()
    started = api.start_notebook(
        project=project, factory=factory, gpus=gpus, hours=hours, datasets=dataset or []
    )
    job_id = started["job"]
    begun = time.monotonic()
    with Status(f"notebook {job_id}: starting", console=err_console) as status:
        found = started
        while found["state"] in ("starting", "reconnecting"):
            if time.monotonic() - begun > READY_LIMIT_S:
                raise CliError(
                    f"notebook {job_id} is not ready after {READY_LIMIT_S:.0f} s "
                    f"(fabbrica job {job_id}; stop it with fabbrica notebook stop {job_id})",
                    FAILURE,
                )
            time.sleep(0.5)
            found = api.notebook(job_id)
            job = api.job(job_id)
            why = f" ({job['reason']})" if job.get("reason") else ""
            status.update(f"notebook {job_id}: {job['state']}{why}")
    url = api.notebook_url(found)
    if found["state"] in FINISHED_STATES:
        job = api.job(job_id)
        raise CliError(
            f"notebook {job_id} ended before it was ready ({found['state']}: "
            f"{job.get('reason') or 'see fabbrica logs ' + str(job_id)})",
            FAILURE,
        )
    emit(
        {"job": job_id, "url": url, "state": found["state"]},
        json_out,
        lambda d: say(f"notebook {d['job']} is ready: {d['url']} (sign in to the portal)"),
    )


@notebook_app.command("list")
def list_notebooks(json_out: JsonOpt = False) -> None:
    """Your notebooks, newest first."""
    api = client()
    rows: list[dict[str, Any]] = [{**n, "url": api.notebook_url(n)} for n in api.notebooks()]

    def human(data: list[dict[str, Any]]) -> None:
        print_table(
            None,
            [
                ("job", lambda n: n["job"]),
                ("project", lambda n: n["project"]),
                ("state", lambda n: n["state"]),
                ("factory", lambda n: n["factory"] or ""),
                ("gpus", lambda n: n["gpus"]),
                ("gpu-hours", lambda n: gpu_hours(n["gpu_hours"], unit=False)),
                ("started", lambda n: when(n["started_at"])),
                ("ends", _ends),
                ("url", lambda n: n["url"] if n["state"] == "ready" else ""),
            ],
            data,
        )

    emit(rows, json_out, human)


def _ends(notebook: dict[str, Any]) -> str:
    """When a running notebook ends if nothing changes, and why (idle or time limit)."""
    at = notebook.get("ends_at")
    if not at:
        return ""
    why = "idle" if notebook.get("ends_because") == "idle" else "time limit"
    return f"{when(at)} ({why})"


@notebook_app.command("stop")
def stop(job_id: Annotated[int, typer.Argument(metavar="JOB")], json_out: JsonOpt = False) -> None:
    """Stop a notebook (cancel its job): charged for the time it ran; its saved files
    stay the job's outputs."""
    api = client()
    api.notebook(job_id)  # 404 unless it is one of your notebooks
    api.cancel(job_id)
    job = api.wait(job_id, timeout=15)
    emit(
        {"job": job_id, "state": job["state"], "gpu_hours": job["gpu_hours"]},
        json_out,
        lambda d: say(f"notebook {d['job']}: {d['state']}, {gpu_hours(d['gpu_hours'])}"),
    )
