"""`fabbrica dataset add|list|show|download|delete`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from fabbrica.cli.client import client
from fabbrica.cli.errors import BAD_INPUT, FAILURE, CliError
from fabbrica.cli.output import emit, err_console, print_record, print_table, say, when
from fabbrica.cli.params import JsonOpt, ProjectFilterOpt
from fabbrica.client import DatasetProgress

dataset_app = typer.Typer(
    help="Data sets: versions of files with a residency that placement honours.",
    no_args_is_help=True,
)

DatasetArg = Annotated[str, typer.Argument(metavar="DATASET", help="Its id, or its name.")]
VersionOpt = Annotated[
    int | None,
    typer.Option("--version", min=1, metavar="N", help="This version (default: the latest)."),
]


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=err_console,
        transient=True,
    )


def _uploading(progress: Progress, name: str) -> Callable[[DatasetProgress], None]:
    tasks: list[Any] = []

    def update(sent: DatasetProgress) -> None:
        if not tasks:
            resumed = f" (resumed at {sent.resumed_from:,} bytes)" if sent.resumed_from else ""
            tasks.append(progress.add_task(f"uploading {name}{resumed}", total=sent.total))
        progress.update(tasks[0], completed=sent.sent)

    return update


@dataset_app.command("add")
def add(
    path: Annotated[Path, typer.Argument(help="A file or a folder.")],
    name: Annotated[str, typer.Option("--name", help="The data set's name in its project.")],
    project: Annotated[str, typer.Option("--project", metavar="PROJECT_ID", help="Its project.")],
    residency: Annotated[
        str | None,
        typer.Option(
            "--residency",
            metavar="CODES|EU",
            help="Where its jobs may run: country codes (IT,FR) or EU. Default: anywhere.",
        ),
    ] = None,
    data_class: Annotated[
        str | None,
        typer.Option(
            "--class",
            metavar="public|internal|personal",
            help="personal must name a residency. Default: internal.",
        ),
    ] = None,
    license_: Annotated[
        str | None, typer.Option("--license", help="An SPDX id or a URL (CC-BY-4.0 ...).")
    ] = None,
    description: Annotated[str | None, typer.Option("--description")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Upload a file or folder as a new version of a data set (the first creates it).

    Every file is stored under its sha256. An interrupted upload resumes where the server
    stopped when the same command runs again.
    """
    if data_class is not None and data_class not in ("public", "internal", "personal"):
        raise CliError("--class is public, internal or personal", BAD_INPUT)
    if not path.exists():
        raise CliError(f"{path} does not exist", BAD_INPUT)
    api = client()
    with _progress() as progress:
        shown = api.add_dataset(
            path,
            name=name,
            project=project,
            residency=residency,
            data_class=data_class,
            license=license_,
            description=description,
            progress=_uploading(progress, path.name),
        )
    if json_out:
        emit({"id": shown["id"], "name": shown["name"], "version": shown["version"],
              "project": shown["project"], "files": shown["files"]}, True)  # fmt: skip
        return
    size = sum(f["size"] for f in shown["files"])
    say(f"{shown['name']}@{shown['version']} (data set {shown['id']}): "
        f"{len(shown['files'])} files, {size:,} bytes")  # fmt: skip


@dataset_app.command("list")
def list_(project: ProjectFilterOpt = None, json_out: JsonOpt = False) -> None:
    """The data sets of your projects."""
    rows = client().datasets(project)
    emit(rows, json_out, _table)


def _table(rows: list[dict[str, Any]]) -> None:
    def size(row: dict[str, Any]) -> str:
        latest = [v for v in row["versions"] if v["version"] == row["version"]]
        return f"{latest[0]['size']:,}" if latest else "-"

    print_table(
        "Data sets",
        [
            ("id", lambda r: r["id"]),
            ("name", lambda r: r["name"]),
            ("project", lambda r: r["project"]),
            ("version", lambda r: r["version"]),
            ("bytes", size),
            ("class", lambda r: r["class"]),
            ("residency", lambda r: r["residency"] or "anywhere"),
        ],
        rows,
    )


@dataset_app.command("show")
def show(dataset: DatasetArg, version: VersionOpt = None, json_out: JsonOpt = False) -> None:
    """A data set, its versions and the files of one version."""
    shown = client().dataset(dataset, version)
    emit(shown, json_out, _record)


def _record(shown: dict[str, Any]) -> None:
    print_record({
        "id": shown["id"], "name": shown["name"], "project": shown["project"],
        "class": shown["class"], "residency": shown["residency"] or "anywhere",
        "license": shown["license"] or "-", "description": shown["description"] or "-",
        "versions": ", ".join(f"{v['version']} ({when(v['created_at'])})"
                              for v in shown["versions"]),
    })  # fmt: skip
    print_table(
        f"Files of version {shown['version']}",
        [
            ("path", lambda f: f["path"]),
            ("bytes", lambda f: f"{f['size']:,}"),
            ("sha256", lambda f: f["sha256"]),
        ],
        shown["files"] or [],
    )


@dataset_app.command("download")
def download(
    dataset: DatasetArg,
    to: Annotated[
        Path | None, typer.Option("--to", metavar="DIR", help="Folder (default ./NAME).")
    ] = None,
    version: VersionOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Download a version's files, each checked against its sha256."""
    api = client()
    shown = api.dataset(dataset, version)
    folder = to or Path(shown["name"])
    with _progress() as progress:
        task = progress.add_task(f"downloading {shown['name']}@{shown['version']}", total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        try:
            api.download_dataset(shown["id"], folder, version=shown["version"], progress=update)
        except ValueError as exc:
            raise CliError(str(exc), FAILURE) from exc
    if json_out:
        emit({"id": shown["id"], "name": shown["name"], "version": shown["version"],
              "folder": str(folder), "files": shown["files"]}, True)  # fmt: skip
        return
    say(f"{len(shown['files'])} files of {shown['name']}@{shown['version']} in {folder}")


@dataset_app.command("delete")
def delete(dataset: DatasetArg, version: VersionOpt = None, json_out: JsonOpt = False) -> None:
    """Delete a version (--version N) or the whole data set; refused while a queued or
    running job reads it."""
    deleted = client().delete_dataset(dataset, version)
    emit(deleted, json_out, lambda d: say("deleted " + ", ".join(d["deleted"])))
