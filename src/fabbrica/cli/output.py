"""Printing: JSON for scripts, Rich tables for people."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


def print_json(data: Any) -> None:
    # Plain print: Rich would wrap long lines and break the JSON for a pipe.
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


Column = tuple[str, Callable[[Any], object]]


def print_table(title: str | None, columns: Sequence[Column], rows: Sequence[Any]) -> None:
    table = Table(title=title, header_style="bold")
    for index, (header, _) in enumerate(columns):
        # The first column holds the id people copy into the next command: never cut it.
        table.add_column(header, no_wrap=index == 0)
    for row in rows:
        table.add_row(*("" if (v := get(row)) is None else str(v) for _, get in columns))
    console.print(table)


def print_record(data: Mapping[str, Any], *, hide: Sequence[str] = ()) -> None:
    """A single object as `key: value` lines."""
    width = max((len(k) for k in data), default=0)
    for key, value in data.items():
        if key not in hide:
            console.print(f"[bold]{key.ljust(width)}[/bold]  {_plain(value)}", highlight=False)


def _plain(value: object) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return "" if value is None else str(value)


def when(value: str | None) -> str:
    """An API timestamp as `YYYY-MM-DD HH:MM` (UTC), or empty."""
    return value[:16].replace("T", " ") if value else ""


def count(n: int, noun: str, plural: str | None = None) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {plural or noun + 's'}"
