"""Options shared by many commands, defined once."""

from __future__ import annotations

import math
from typing import Annotated

import typer

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
ProjectFilterOpt = Annotated[
    str | None, typer.Option("--project", metavar="PROJECT_ID", help="Only this project's.")
]


def finite(value: float | None) -> float | None:
    """A number option must be a finite number: `nan` and `inf` are refused (exit 2)."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


def positive(value: float | None) -> float | None:
    """GPU-hours and the like: a finite number above zero (exit 2 otherwise)."""
    if finite(value) is not None and value is not None and value <= 0:
        raise typer.BadParameter(f"{value:g} is not above zero")
    return value
