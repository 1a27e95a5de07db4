"""Reading a GPU-cluster trace: rows of `timestamp, duration, num_gpus, cluster`.

A row that cannot be used is skipped and counted by kind; a trace whose header lacks a
column, or that has no usable row, is refused with a `TraceError` naming the problem.
Rows need not be sorted: jobs come out in submission order (how many were out of order
is counted). Times are seconds after the first submission. An optional column `gpu_model`
pins a job to factories of that GPU model (empty: any).
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from operator import itemgetter
from pathlib import Path

COLUMNS = ("timestamp", "duration", "num_gpus", "cluster")

# skip kinds, as reported
MISSING = "missing_value"
BAD_TIMESTAMP = "bad_timestamp"
BAD_DURATION = "bad_duration"
NEGATIVE_DURATION = "negative_duration"
BAD_GPUS = "bad_num_gpus"
NON_POSITIVE_GPUS = "non_positive_gpus"


class TraceError(ValueError):
    """The trace cannot be used at all."""


@dataclass(frozen=True, slots=True)
class TraceJob:
    submit: float  # seconds after the trace's first submission
    duration: float  # seconds of real run time
    gpus: int
    cluster: str  # the virtual cluster (team queue): the job's home
    gpu_model: str | None = None  # the model it asks for (optional column `gpu_model`)


@dataclass(frozen=True)
class Trace:
    jobs: tuple[TraceJob, ...]
    start: float  # epoch seconds of the first submission
    rows: int
    skipped: dict[str, int] = field(default_factory=dict)
    out_of_order: int = 0  # rows submitted before the row above them (sorted here)
    source: str = ""

    @property
    def span(self) -> float:
        return self.jobs[-1].submit - self.jobs[0].submit if self.jobs else 0.0

    def clusters(self) -> list[str]:
        return sorted({j.cluster for j in self.jobs})


def _timestamp(text: str) -> float:
    if ":" not in text:  # a number never has one; an ISO time of day does
        try:
            return _number(text)
        except ValueError:
            if text.strip().lower().lstrip("+-") in {"nan", "inf", "infinity"}:
                raise
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:  # taken as UTC: the time since the epoch, as timestamp() counts
        return (moment - _EPOCH).total_seconds()
    return moment.timestamp()


_EPOCH = datetime(1970, 1, 1)  # naive: naive times are taken as UTC


def _number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def load(path: Path) -> Trace:
    try:
        handle = path.open(newline="", encoding="utf-8-sig")  # a BOM (Excel) is not a name
    except OSError as exc:
        raise TraceError(f"cannot read trace {path}: {exc.strerror or exc}") from exc
    with handle:
        reader = csv.reader(handle)
        try:
            header = [name.strip() for name in next(reader, [])]
            missing = [c for c in COLUMNS if c not in header]
            if missing:
                raise TraceError(
                    f"trace {path}: missing column(s) {', '.join(missing)}; a trace needs "
                    f"{', '.join(COLUMNS)} (found: {', '.join(header)[:200] or 'none'})"
                )
            return _read(reader, header, path)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise TraceError(f"trace {path}, line {reader.line_num}: {exc}") from exc


def _read(reader: Iterator[list[str]], header: list[str], path: Path) -> Trace:
    """The rows as a `csv.DictReader` would give them (a name given twice: its last
    column; a short row: empty values), read by column index: no dict per row."""
    last_of = {name: i for i, name in enumerate(header)}
    at = [last_of[c] for c in COLUMNS]
    model_at = last_of.get("gpu_model")
    width = max([*at, -1 if model_at is None else model_at]) + 1
    skipped: Counter[str] = Counter()
    rows: list[tuple[float, float, int, str, str | None]] = []
    out_of_order, last, count = 0, -math.inf, 0
    padding = [""] * width
    for row in reader:
        if not row:
            continue  # an empty line (DictReader skips it too)
        if len(row) < width:
            row = row + padding
        values = [row[i].strip() for i in at]
        if not any(values):
            continue  # blank line
        count += 1
        kind, parsed = _parse(values)
        if kind:
            skipped[kind] += 1
            continue
        assert parsed is not None
        if parsed[0] < last:
            out_of_order += 1
        last = parsed[0]
        model = row[model_at].strip() or None if model_at is not None else None
        rows.append((*parsed, model))
    if not rows:
        detail = ", ".join(f"{n} {k}" for k, n in sorted(skipped.items())) or "no rows"
        raise TraceError(f"trace {path} has no usable job ({detail})")
    rows.sort(key=_FIRST)
    start = rows[0][0]
    jobs = tuple(TraceJob(t - start, d, g, c, m) for t, d, g, c, m in rows)
    return Trace(jobs, start, count, dict(sorted(skipped.items())), out_of_order, str(path))


_FIRST = itemgetter(0)


def _parse(values: list[str]) -> tuple[str, tuple[float, float, int, str] | None]:
    stamp, duration, gpus, cluster = values
    if not all(values):
        return MISSING, None
    try:
        when = _timestamp(stamp)
    except (ValueError, OverflowError, OSError):
        return BAD_TIMESTAMP, None
    try:
        seconds = _number(duration)
    except ValueError:
        return BAD_DURATION, None
    if seconds < 0:
        return NEGATIVE_DURATION, None
    try:
        amount = _number(gpus)
    except ValueError:
        return BAD_GPUS, None
    if amount != int(amount):
        return BAD_GPUS, None
    count = int(amount)
    if count <= 0:
        return NON_POSITIVE_GPUS, None
    return "", (when, seconds, count, cluster)


def shifted_copies(trace: Trace, copies: int, spread: float) -> tuple[TraceJob, ...]:
    """`copies` copies of the trace, copy k shifted by k * spread / copies seconds."""
    if copies <= 1:
        return trace.jobs
    merged = [
        TraceJob(j.submit + k * spread / copies, j.duration, j.gpus, j.cluster, j.gpu_model)
        for k in range(copies)
        for j in trace.jobs
    ]
    merged.sort(key=lambda j: j.submit)
    return tuple(merged)
