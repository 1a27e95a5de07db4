"""`fabbrica model list|show|download|card`: the model registry and its lineage."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from fabbrica.cli.client import client
from fabbrica.cli.errors import BAD_INPUT, CliError
from fabbrica.cli.output import emit, print_record, print_table, say, when
from fabbrica.cli.params import JsonOpt, ProjectFilterOpt

model_app = typer.Typer(
    help="Registered models: versions, lineage (job, data, compute) and model cards.",
    no_args_is_help=True,
)

ModelArg = Annotated[
    str,
    typer.Argument(
        metavar="NAME@VERSION", help="A version (NAME@3), an alias (NAME@champion) or NAME."
    ),
]
ProjectOpt = Annotated[
    str | None,
    typer.Option("--project", metavar="PROJECT_ID", help="Its project (when several have it)."),
]


def _check(ref: str) -> str:
    name, _, version = ref.partition("@")
    if not name or (version == "" and "@" in ref):
        raise CliError("a model is NAME@VERSION, NAME@ALIAS or NAME", BAD_INPUT)
    return ref


@model_app.command("list")
def list_models(project: ProjectFilterOpt = None, json_out: JsonOpt = False) -> None:
    """Every version of your projects' registered models, newest first."""
    rows = client().models(project)
    emit(rows, json_out, _table)


def _table(rows: list[dict[str, Any]]) -> None:
    print_table(
        "Models",
        [
            ("name", lambda r: r["name"]),
            ("version", lambda r: r["version"]),
            ("aliases", lambda r: ", ".join(r["aliases"]) or "-"),
            ("project", lambda r: r["project"]),
            ("job", lambda r: r["job"] if r["job"] is not None else "-"),
            ("registered", lambda r: when(r["created_at"])),
        ],
        rows,
    )


@model_app.command("show")
def show(model: ModelArg, project: ProjectOpt = None, json_out: JsonOpt = False) -> None:
    """A version and its lineage: job, data set versions, factory, GPU-hours, metrics."""
    shown = client().model(_check(model), project)
    emit(shown, json_out, _record)


def _record(shown: dict[str, Any]) -> None:
    data = ", ".join(f"{d['name']}@{d['version']}" for d in shown["datasets"]) or "-"
    hours = shown["gpu_hours"]
    print_record({
        "model": f"{shown['name']}@{shown['version']}", "project": shown["project"],
        "aliases": ", ".join(shown["aliases"]) or "-",
        "job": "-" if shown["job"] is None else f"{shown['job']} ({shown['job_state']})",
        "factory": shown["factory"] or "-", "GPU model": shown["gpu_model"] or "-",
        "GPU-hours": "not charged yet" if hours is None else f"{hours:.4g}",
        "compute": shown["compute"]["text"], "data sets": data,
        "workdir sha256": shown["workdir_sha256"] or "-", "run": shown["run_id"] or "-",
        "files": shown["source"] or "-",
    })  # fmt: skip
    metrics = sorted(shown["metrics"].items())
    print_table("Metrics", [("metric", lambda m: m[0]), ("value", lambda m: f"{m[1]:.6g}")],
                metrics)  # fmt: skip


@model_app.command("download")
def download(
    model: ModelArg,
    to: Annotated[
        Path | None, typer.Option("--to", metavar="DIR", help="Folder (default ./NAME-VERSION).")
    ] = None,
    project: ProjectOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Download a version's files (those its run logged)."""
    api = client()
    shown = api.model(_check(model), project)
    folder = to or Path(f"{shown['name']}-{shown['version']}")
    api.download_model(f"{shown['name']}@{shown['version']}", folder, shown["project"])
    got = {"name": shown["name"], "version": shown["version"], "folder": str(folder)}
    emit(got, json_out, lambda g: say(f"{g['name']}@{g['version']} in {g['folder']}"))


@model_app.command("card")
def card(
    model: ModelArg,
    to: Annotated[
        str | None,
        typer.Option(
            "--to", metavar="FILE", help="Where to write it (default NAME-VERSION.md; - prints it)."
        ),
    ] = None,
    project: ProjectOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Write the version's model card (Markdown): lineage, data, compute, and the AI Act
    fields a provider completes (intended use, limitations)."""
    api = client()
    shown = api.model(_check(model), project)
    ref = f"{shown['name']}@{shown['version']}"
    text = api.model_card(ref, shown["project"])
    if to == "-":
        typer.echo(text, nl=False)
        return
    target = Path(to or f"{shown['name']}-{shown['version']}.md")
    target.write_text(text, encoding="utf-8")
    got = {"name": shown["name"], "version": shown["version"], "path": str(target)}
    emit(got, json_out, lambda g: say(f"model card of {ref} written to {g['path']}"))
