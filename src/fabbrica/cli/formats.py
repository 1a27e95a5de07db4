"""How values are written for people, and JSON for scripts: no Rich here (the CLI's quick
`fabbrica run` prints with these without importing it; fabbrica.cli.output uses them too)."""

from __future__ import annotations

import json
import math
from typing import Any


def print_json(data: Any) -> None:
    # Plain print: Rich would wrap long lines and break the JSON for a pipe.
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def plain(key: str, value: object) -> str:
    """A value of a `key: value` record as people read it."""
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
