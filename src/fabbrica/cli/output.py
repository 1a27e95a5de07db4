"""Printing: JSON for scripts, Rich tables for people."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


def print_json(data: Any) -> None:
    # Plain print: Rich would wrap long lines and break the JSON for a pipe.
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


Column = tuple[str, Callable[[dict[str, Any]], object]]


def print_table(
    title: str | None, columns: Sequence[Column], rows: Sequence[dict[str, Any]]
) -> None:
    table = Table(title=title, header_style="bold")
    for header, _ in columns:
        table.add_column(header)
    for row in rows:
        table.add_row(*("" if (v := get(row)) is None else str(v) for _, get in columns))
    console.print(table)


def print_record(data: dict[str, Any], *, hide: Sequence[str] = ()) -> None:
    """A single object as `key: value` lines."""
    width = max((len(k) for k in data), default=0)
    for key, value in data.items():
        if key not in hide:
            console.print(f"[bold]{key.ljust(width)}[/bold]  {value}", highlight=False)
