"""Printing: JSON for scripts, Rich tables for people; user text always printed as text.

Stored names, messages, error texts and patterns are never read as Rich markup (a name
`[bold red]x[/]` prints as written) and never highlighted. Tables keep every cell whole:
the first column (the id people copy) never wraps, and a table is printed at least as wide
as it needs; on a terminal (or with `COLUMNS` set) other columns wrap to fit, into a pipe
each row stays on one line.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def print_json(data: Any) -> None:
    # Plain print: Rich would wrap long lines and break the JSON for a pipe.
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def emit(data: Any, json_out: bool, human: Callable[[Any], None] | None = None) -> None:
    """JSON for scripts (`--json`), else `human(data)` (default: `key: value` lines)."""
    if json_out:
        print_json(data)
    elif human is not None:
        human(data)
    else:
        print_record(data)


def say(text: str, *, style: str | None = None, err: bool = False) -> None:
    """One line of text as it is (no markup), optionally in one style."""
    (err_console if err else console).print(Text(text, style=style or ""), soft_wrap=True)


Column = tuple[str, Callable[[Any], object]]


def print_table(title: str | None, columns: Sequence[Column], rows: Sequence[Any]) -> None:
    table = Table(title=None if title is None else Text(title), header_style="bold")
    for index, (header, _) in enumerate(columns):
        # The first column holds the id people copy into the next command: never cut it.
        table.add_column(Text(header), no_wrap=index == 0, overflow="fold")
    for row in rows:
        table.add_row(*(Text(cell(get(row))) for _, get in columns))
    width = table_width(console, table)
    if width == console.width:
        console.print(table)
    else:  # Console.print cannot go wider than the console: a console of the width needed
        Console(width=width, highlight=False, file=console.file).print(table)


def table_width(target: Console, table: Table) -> int:
    """The width to print a table at: the terminal's (or `COLUMNS`), never less than the
    table needs to keep every word whole; into a pipe without `COLUMNS`, its natural width."""
    needed = Measurement.get(target, target.options.update_width(1_000_000), table)
    if target.is_terminal or os.environ.get("COLUMNS", "").isdigit():
        return max(target.width, needed.minimum)
    return max(needed.maximum, 1)


def print_record(data: Mapping[str, Any], *, hide: Sequence[str] = ()) -> None:
    """A single object as `key: value` lines."""
    width = max((len(k) for k in data), default=0)
    for key, value in data.items():
        if key not in hide:
            line = Text.assemble((key.ljust(width), "bold"), "  ", _plain(key, value))
            console.print(line, soft_wrap=True)


def _plain(key: str, value: object) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(cell(v) for v in value)
    if key.endswith("gpu_hours") and isinstance(value, int | float):
        return gpu_hours(value)
    return cell(value)


def cell(value: object) -> str:
    """A value as people read it: empty for None, floats without exponents."""
    if value is None:
        return ""
    if isinstance(value, float):
        return number(value)
    return str(value)


def number(value: float, *, places: int = 4) -> str:
    """A float as people read it: `0.0016`, `12.5`, `1,234`, `0.0000055` (no `5.5e-06`);
    at least two significant digits below 1, up to `places` decimals above."""
    if not math.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    size = abs(value)
    if size >= 1000:
        text = f"{value:,.0f}" if size >= 100_000 else f"{value:,.{min(places, 1)}f}"
    elif size >= 1:
        text = f"{value:,.{places}f}"
    else:
        digits = max(places, 1 - math.floor(math.log10(size)))
        text = f"{value:.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def gpu_hours(value: float | None, *, unit: bool = True) -> str:
    """GPU-hours as people read them: `0.0016 GPU-h`, `50 GPU-h` (empty for None)."""
    if value is None:
        return ""
    return f"{number(value)} GPU-h" if unit else number(value)


def when(value: str | None) -> str:
    """An API timestamp as `YYYY-MM-DD HH:MM` (UTC), or empty."""
    return value[:16].replace("T", " ") if value else ""


def count(n: int, noun: str, plural: str | None = None) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {plural or noun + 's'}"


def log_to_stderr(level: str) -> None:
    """Fabbrica's own log lines (the `fabbrica.*` loggers) on stderr at `level`
    (FABBRICA_LOG_LEVEL), beside the web server's; nothing else's."""
    logger = logging.getLogger("fabbrica")
    if any(getattr(h, "fabbrica_stderr", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    handler.fabbrica_stderr = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False
