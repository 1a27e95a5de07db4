"""`fabbrica run`, `jobs`, `job`, `logs`, `cancel`, `download`, `usage`."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TransferSpeedColumn,
)

from fabbrica.cli.client import client
from fabbrica.cli.errors import BAD_INPUT, FAILURE, CliError
from fabbrica.cli.helptext import spec_help
from fabbrica.cli.output import count, emit, err_console, gpu_hours, print_table, say, when
from fabbrica.cli.params import JsonOpt, ProjectFilterOpt
from fabbrica.cli.template_cmds import parse_sets
from fabbrica.client import FINISHED_STATES as FINISHED
from fabbrica.client import UploadProgress
from fabbrica.client.types import Job

INTERRUPTED = 130  # as a shell reports Ctrl-C


def _uploading(progress: Progress) -> Callable[[UploadProgress], None]:
    """A progress bar of the workdir's upload."""
    task: list[TaskID] = []

    def update(sent: UploadProgress) -> None:
        if not task:
            task.append(progress.add_task(f"uploading {sent.workdir.name}", total=sent.total))
        progress.update(task[0], completed=sent.sent)

    return update


def run(
    file: Annotated[
        Path | None, typer.Argument(help="The job spec (YAML or JSON); or --template.")
    ] = None,
    template: Annotated[
        str | None,
        typer.Option("--template", metavar="NAME", help="Make the job from this template."),
    ] = None,
    sets: Annotated[
        list[str] | None,
        typer.Option("--set", metavar="KEY=VALUE", help="A template parameter (repeatable)."),
    ] = None,
    datasets: Annotated[
        list[str] | None,
        typer.Option(
            "--dataset", metavar="NAME", help="A data set the template's job reads (repeatable)."
        ),
    ] = None,
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
    api = client()
    if (file is None) == (template is None):
        raise CliError("give a job spec file or --template NAME (one of them)", BAD_INPUT)
    if file is None and workdir_opt is not None:
        raise CliError(
            "--workdir goes with a spec file: a template's files are its workdir", BAD_INPUT
        )
    if file is not None and (sets or datasets):
        raise CliError("--set and --dataset go with --template", BAD_INPUT)
    if template is not None:
        values = parse_sets(sets or [])
        job = api.submit_template(template, values, project=project, datasets=tuple(datasets or ()))
    elif follow and file is not None and _is_array(file):
        raise CliError(
            "an array has a log per task: follow one with fabbrica logs ID --follow", BAD_INPUT
        )
    else:
        assert file is not None
        job = _submit_file(file, project, workdir_opt)
    _after_submit(job, wait=wait, follow=follow, json_out=json_out)


def _submit_file(file: Path, project: str | None, workdir: Path | None) -> Job:
    api = client()
    with Progress(
        TextColumn("{task.description}", markup=False),  # a folder name is not markup
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=err_console,
        transient=True,
    ) as progress:
        return api.submit(file, project=project, workdir=workdir, progress=_uploading(progress))


def _after_submit(job: Job, *, wait: bool, follow: bool, json_out: bool) -> None:
    array_id = job.get("array_id")
    if array_id is not None:
        say(
            f"job {job['id']} is the first task of array {array_id}; all of them: "
            f"fabbrica jobs --array {array_id}",
            err=True,
        )
        if wait:
            tasks = _wait_array(array_id)
            emit(tasks, json_out, _job_table)
            if any(t["state"] != "succeeded" for t in tasks):
                raise typer.Exit(FAILURE)
            return
    if follow:
        job = _follow(job["id"])
    elif wait:
        job = _wait(job["id"])
    emit(job, json_out)
    if (wait or follow) and job["state"] != "succeeded":
        raise typer.Exit(FAILURE)


def _is_array(file: Path) -> bool:
    """Whether the spec file asks for an array (a spec that does not parse: the
    submission says why)."""
    from fabbrica.core.jobspec import SpecError, parse_job_spec

    try:
        return parse_job_spec(file.read_bytes()).array is not None
    except (OSError, SpecError):
        return False


def _wait_array(array_id: int, poll: float = 1.0) -> list[Job]:
    """Every task of the array, once all have ended."""
    with _interruptible(array_id):
        api = client()
        while True:
            tasks = api.jobs(array_id=array_id)
            if all(t["state"] in FINISHED for t in tasks):
                return tasks
            time.sleep(poll)


run.__doc__ = f"""Submit a job: packs and uploads its workdir, prints the job.

Validates the spec (exit 2 naming the field), takes the project from `--project`, the spec's
`project`, or else the one project you belong to, packs the workdir (`.git`, `.venv`,
`__pycache__` left out), uploads it with a progress bar and prints the job. A `workdir` that
resolves outside the spec's folder (`../../etc`) is refused (exit 2) unless `--workdir`
names the folder on the command line. The server refuses (exit 2, with the numbers) a job that
can never run or whose worst case (GPUs x time limit under the billing rule) exceeds what every
eligible allocation has left. `--wait` returns when the job ends, `--follow` streams its
output; with either, the exit code is 1 unless the job succeeded, and Ctrl-C stops waiting
(exit 130) while the job runs on. A spec with `array: 1-100` queues 100 tasks in one request
(each sees its index in `FABBRICA_ARRAY_INDEX`; their worst case together must fit an
allocation); the first task is printed, `--wait` waits for all of them (exit 1 unless all
succeeded), `--follow` is refused (exit 2): follow one task with `fabbrica logs ID --follow`.

`--template NAME` makes the job from a template instead of a spec file (`fabbrica
templates`): each `--set key=value` gives a parameter (checked with its type and limits:
exit 2 naming the parameter, nothing submitted), the others take their defaults;
`--dataset NAME` adds a data set the job reads; the template's files are the workdir.

{spec_help()}

Durations are written `30m`, `2h`, `1h30m`, `1d`, `01:30:00`; see `examples/digits/job.yaml`.
"""


@contextmanager
def _interruptible(job_id: int) -> Iterator[None]:
    """Ctrl-C while waiting or following: stop waiting (exit 130); the job runs on."""
    try:
        yield
    except KeyboardInterrupt:
        say(f"stopped waiting; job {job_id} runs on (fabbrica job {job_id})", err=True)
        raise typer.Exit(INTERRUPTED) from None


def _wait(job_id: int, timeout: float | None = None) -> Job:
    with _interruptible(job_id):
        return client().wait(job_id, timeout=timeout)


def _follow(job_id: int) -> Job:
    """Print the job's output as it comes; the job once it has finished."""
    with _interruptible(job_id):
        api = client()
        for text in api.follow(job_id):
            sys.stdout.write(text)
            sys.stdout.flush()
        return api.job(job_id)


def jobs(
    project: ProjectFilterOpt = None,
    array: Annotated[
        int | None,
        typer.Option("--array", metavar="ARRAY_ID", min=1, help="The tasks of this array."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """List jobs, newest first.

    Jobs of your projects, newest first, with the reason each waiting job waits; with
    `--array ID`, every task of that job array in index order.
    """
    rows = client().jobs(project, array_id=array)
    emit(rows, json_out, _job_table)


def _job_table(rows: list[Job]) -> None:
    print_table(
        count(len(rows), "job"),
        [
            ("id", lambda r: r["id"]),
            ("name", lambda r: _task_name(r)),
            ("state", lambda r: r["state"]),
            ("factory", lambda r: r["factory"]),
            ("GPUs", lambda r: r["gpus"]),
            ("GPU-h", lambda r: gpu_hours(r["gpu_hours"], unit=False)),
            ("submitted", lambda r: when(r["submitted_at"])),
            ("reason", lambda r: r["reason"]),
        ],
        rows,
    )


def _task_name(row: Job) -> str:
    index = row.get("array_index")
    return f"{row['name']}[{index}]" if index is not None else row["name"]


def job(job_id: int, json_out: JsonOpt = False) -> None:
    """One job: state, where it runs, why it waits, what it charged.

    One job: `id`, `state`, `reason`, `factory`, `partition`, `gpus`, `gpu_hours` (charged),
    `submitted_at`, `started_at`, `ended_at`, `exit_code`.
    """
    emit(client().job(job_id), json_out)


def logs(
    job_id: int,
    follow: Annotated[bool, typer.Option("--follow", help="Keep printing until it ends.")] = False,
) -> None:
    """Print a job's output.

    The job's output (stdout and stderr).
    """
    if follow:
        _follow(job_id)
        return
    sys.stdout.write(client().logs(job_id))


def cancel(
    job_id: int,
    array: Annotated[
        bool, typer.Option("--array", help="Cancel every unfinished task of the job's array.")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Cancel a job; waits (up to 10 s) until it has stopped.

    Cancels a job and waits (up to 10 s) until it has stopped; charged for the time used only.
    With `--array`, every unfinished task of the array the job belongs to: queued tasks at
    once, running ones within seconds (prints how many of each; does not wait).
    """
    api = client()
    if array:
        done = api.cancel_array(job_id)
        emit(
            done,
            json_out,
            lambda d: say(
                f"array {d['array_id']}: {d['cancelled']} queued tasks cancelled, "
                f"{d['stopping']} running tasks stopping"
            ),
        )
        return
    job_data = api.cancel(job_id)
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
    got = client().download(job_id, to)
    say(f"{len(got.names)} entries from job {job_id} in {got.folder}", err=True)


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
    rows = client().usage(by, project_id=project)
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
