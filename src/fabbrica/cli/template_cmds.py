"""`fabbrica templates` (list, show) and the `--set key=value` parsing of `run --template`."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from fabbrica.cli.client import client
from fabbrica.cli.errors import BAD_INPUT, CliError
from fabbrica.cli.output import count, emit, print_table, say
from fabbrica.cli.params import JsonOpt

templates_app = typer.Typer(invoke_without_command=True)


@templates_app.callback()
def templates(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Job templates: list them, or show one (`show NAME`).

    The templates shipped with Fabbrica and those the operator added (setting
    `templates_dir`): `name`, `description`, `parameters`. Run one with
    `fabbrica run --template NAME --set key=value`; its parameters: `fabbrica templates
    show NAME`.
    """
    if ctx.invoked_subcommand is not None:
        return
    rows = client().templates()
    emit(rows, json_out, _table)


def _table(rows: list[dict[str, Any]]) -> None:
    print_table(
        count(len(rows), "template"),
        [
            ("name", lambda r: r["name"]),
            ("parameters", lambda r: ", ".join(p["name"] for p in r["parameters"])),
            ("description", lambda r: r["description"]),
        ],
        rows,
    )


@templates_app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="The template's name.")],
    json_out: JsonOpt = False,
) -> None:
    """One template: what it does and each parameter's type, default and limits."""
    emit(client().template(name), json_out, _detail)


def _detail(template: dict[str, Any]) -> None:
    say(f"{template['name']}: {template['description']}")
    print_table(
        count(len(template["parameters"]), "parameter"),
        [
            ("name", lambda p: p["name"]),
            ("type and default", lambda p: p["summary"]),
            ("meaning", lambda p: p["description"]),
        ],
        template["parameters"],
    )
    say(f"fabbrica run --template {template['name']} --set name=value ...")


def parse_sets(items: list[str]) -> dict[str, str]:
    """`key=value` pairs from `--set`; a malformed or repeated one exits 2."""
    values: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CliError(f"--set {item!r}: write it as name=value", BAD_INPUT)
        if key in values:
            raise CliError(f"--set {key}: given twice", BAD_INPUT)
        values[key] = value
    return values
