"""`fabbrica report federation`: the federation report as a table, JSON, CSV or HTML."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from fabbrica.cli.client import client
from fabbrica.cli.errors import BAD_INPUT, CliError
from fabbrica.cli.output import console, print_json, say
from fabbrica.cli.report_tables import tables, to_csv


class Format(StrEnum):
    TABLE = "table"
    JSON = "json"
    CSV = "csv"
    HTML = "html"


def _date(value: str | None) -> dt.date | None:
    """A day as YYYY-MM-DD (exit 2 otherwise)."""
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from None


def report_federation(
    start: Annotated[
        str | None,
        typer.Option(
            "--from",
            metavar="DATE",
            help="First day (YYYY-MM-DD, UTC), included. Default: the first of last month.",
        ),
    ] = None,
    end: Annotated[
        str | None,
        typer.Option(
            "--to",
            metavar="DATE",
            help="The day after the last (YYYY-MM-DD, UTC), excluded. Default: the first of "
            "this month (with --from: tomorrow).",
        ),
    ] = None,
    factory: Annotated[
        str | None, typer.Option("--factory", metavar="F", help="Only this factory.")
    ] = None,
    fmt: Annotated[
        Format, typer.Option("--format", help="table, json, csv or html (one page, charts).")
    ] = Format.TABLE,
    out: Annotated[
        Path | None,
        typer.Option("--out", metavar="FILE", help="Write to FILE instead of the terminal."),
    ] = None,
) -> None:
    """GPU-hours granted and used, decision times, utilisation, EU vs national access.

    Operators (their factories) and the federation office (all): GPU-hours granted and used
    by member state, factory, sector, organisation type and access mode; the share of
    startups and SMEs; decisions per access mode within the target in working days, median
    and p90; hours from acceptance to the first job; utilisation per factory; GPU-hours of
    EU calls and national access against the factory's EU share. The period is [--from,
    --to) in UTC; `--format html --out report.html` writes one page with charts.
    """
    first, after = _date(start), _date(end)
    if first is not None and after is not None and after <= first:
        raise CliError(f"--from ({first}) must be before --to ({after})", BAD_INPUT)
    data = client().federation_report(start=first, end=after, factory=factory)
    if fmt is Format.HTML:
        from fabbrica.cli.report_html import PlotUnavailable, render

        try:
            _write(render(data), out)
        except PlotUnavailable as exc:
            raise CliError(str(exc), BAD_INPUT) from None
    elif fmt is Format.CSV:
        _write(to_csv(data), out)
    elif fmt is Format.JSON:
        if out is None:
            print_json(data)
        else:
            _write(_json(data), out)
    elif out is not None:
        _write(_text(data), out)
    else:
        _print_tables(data)


def _json(data: dict[str, Any]) -> str:
    import json

    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def _write(text: str, out: Path | None) -> None:
    if out is None:
        typer.echo(text, nl=False)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot write {out}: {exc.strerror}", BAD_INPUT) from None
    say(f"wrote {out}", err=True)


def _print_tables(data: dict[str, Any]) -> None:
    period = data["period"]
    say(f"federation report [{period['from'][:10]}, {period['to'][:10]}) UTC", style="bold")
    from rich.table import Table as RichTable
    from rich.text import Text

    for table in tables(data):
        rich = RichTable(title=Text(table.title), header_style="bold")
        for header in table.headers:
            rich.add_column(Text(header), overflow="fold")
        for row in table.rows:
            rich.add_row(*(Text(c) for c in row))
        console.print(rich)


def _text(data: dict[str, Any]) -> str:
    lines = []
    for table in tables(data):
        lines.append(table.title)
        lines.append("\t".join(table.headers))
        lines += ["\t".join(row) for row in table.rows]
        lines.append("")
    return "\n".join(lines)
