"""`--outage FACTORY@START+DURATION`: a factory down for a while during a replay.

START and DURATION are durations: a bare number is hours (`36`, `1.5`), else `90m`, `36h`,
`2d`, `1d12h`, `01:30:00`, or ISO 8601 (`P1D`, `PT36H`, `P1DT12H`). START counts from the
trace's first submission. Examples: `6214e9@3d+1d`, `it4lia@P10DT6H+PT12H`.
"""

from __future__ import annotations

import math
import re

from fabbrica.core.jobspec import parse_duration
from fabbrica.sim.engine import Outage

_ISO = re.compile(
    r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)
_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
# 46d, 1d12h, 90m, 1.5h: units in order, any of them (a trace may run for months, past the
# job-spec durations' limit)
_UNITS_TEXT = re.compile(
    r"^(?:(?P<d>\d+(?:\.\d+)?)d)?(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m)?"
    r"(?:(?P<s>\d+(?:\.\d+)?)s)?$"
)


def seconds(text: str, *, zero: bool = False) -> float:
    """A duration in seconds, as the module docstring says."""
    value = text.strip()
    if not value:
        raise ValueError("empty")
    try:
        hours = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(hours) or hours < 0 or (hours == 0 and not zero):
            raise ValueError(f"{text!r} is not a {'non-negative' if zero else 'positive'} number")
        return hours * 3600.0
    iso = _ISO.match(value.upper())
    units = _UNITS_TEXT.match(value.lower())
    if units and any(units.groupdict().values()):
        iso = units
    if iso and value.upper() not in {"P", "PT"} and not value.upper().endswith("T"):
        total = sum(float(v) * _UNITS[k] for k, v in iso.groupdict().items() if v)
        if total <= 0 and not zero:
            raise ValueError(f"{text!r} is not a positive duration")
        return total
    try:
        return float(parse_duration(value))
    except ValueError:
        raise ValueError(
            f"{text!r} is not a duration (hours as a number, 90m, 36h, 1d12h, P1DT12H)"
        ) from None


def parse(text: str) -> Outage:
    """`FACTORY@START+DURATION` -> Outage; ValueError saying what is wrong."""
    factory, at, when = text.rpartition("@")
    if not at or not factory.strip():
        raise ValueError(f"{text!r} is not FACTORY@START+DURATION (e.g. it4lia@3d+1d)")
    start, plus, duration = when.partition("+")
    if not plus:
        raise ValueError(f"{text!r} has no +DURATION (e.g. it4lia@3d+1d)")
    try:
        begin = seconds(start, zero=True)
    except ValueError as exc:
        raise ValueError(f"{text!r}: START {exc}") from None
    try:
        length = seconds(duration)
    except ValueError as exc:
        raise ValueError(f"{text!r}: DURATION {exc}") from None
    return Outage(factory.strip(), begin, length)
