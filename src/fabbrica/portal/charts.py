"""Charts drawn on the server as plain SVG: this module lays the shapes out (pure
arithmetic, no drawing library), templates/chart.html draws them.

Every chart is readable without colour: each series has its own fill pattern (solid,
hatched, dotted) shown in a legend, every bar carries its value as text, and the numbers
are also given as a table beside the chart. The SVG has role="img" with a <title> and
<desc> for screen readers.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from babel.dates import format_date
from babel.numbers import format_percent

from fabbrica.portal.i18n import LOCALES, _, language, number

PATTERNS = ("solid", "hatch", "dots")
WIDTH = 640
LABEL_WIDTH = 170  # the category names, left of the bars
VALUE_ROOM = 96  # right of the longest bar, for its value
BAR = 16
BAR_GAP = 3
GROUP_GAP = 12
TOP = 8
AXIS = 28  # below the bars: the ticks
LEGEND = 26
MAX_LABEL = 24  # characters of a category name drawn (the table has it whole)

Format = Callable[[float], str]


def gpu_hours(value: float) -> str:
    """Whole GPU-hours, with one decimal below 100 (a small use is not shown as 0)."""
    return number(value, 1 if 0 < abs(value) < 100 and value != int(value) else 0)


def percent(value: float) -> str:
    pattern = "#,##0.0%" if 0 < value < 0.1 else "#,##0%"
    return format_percent(value, format=pattern, locale=LOCALES[language()])


@dataclass(frozen=True)
class Series:
    name: str
    values: tuple[float | None, ...]  # one per category; None: no figure (drawn as "n/a")


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    pattern: str
    text: str
    text_x: float
    text_y: float
    anchor: str = "start"


@dataclass(frozen=True)
class Text:
    x: float
    y: float
    text: str
    anchor: str = "end"
    title: str = ""  # the whole text, when `text` is shortened


@dataclass(frozen=True)
class Swatch:
    x: float
    y: float
    pattern: str
    name: str


@dataclass(frozen=True)
class Chart:
    id: str
    title: str
    desc: str
    width: int
    height: int
    bars: tuple[Bar, ...]
    labels: tuple[Text, ...]
    ticks: tuple[Text, ...]
    grid: tuple[float, ...]  # x (bar charts) or y (column charts) of the grid lines
    legend: tuple[Swatch, ...]
    plot: tuple[float, float, float, float]  # x, y, width, height of the plotting area
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    columns: bool = False  # vertical bars (over time): the grid lines run across

    @property
    def empty(self) -> bool:
        return not self.rows


def nice_maximum(value: float) -> float:
    """The axis end: the first of 1, 2, 2.5, 5 times a power of ten at or above `value`."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value * (1 - 1e-9):
            return float(step * power)
    return float(10 * power)  # not reached


def _short(text: str) -> str:
    return text if len(text) <= MAX_LABEL else text[: MAX_LABEL - 1] + "…"


def _legend(series: Sequence[Series], y: float) -> tuple[Swatch, ...]:
    if len(series) < 2:
        return ()
    swatches, x = [], float(LABEL_WIDTH)
    for n, s in enumerate(series):
        swatches.append(Swatch(x, y, PATTERNS[n % len(PATTERNS)], s.name))
        x += 30 + 8 * len(s.name)
    return tuple(swatches)


def _table(
    categories: Sequence[str], series: Sequence[Series], fmt: Format, first: str
) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
    headers = (first, *(s.name for s in series))
    rows = tuple(
        (name, *(_("n/a") if s.values[i] is None else fmt(s.values[i] or 0.0) for s in series))
        for i, name in enumerate(categories)
    )
    return headers, rows


def bar_chart(
    chart_id: str,
    title: str,
    categories: Sequence[str],
    series: Sequence[Series],
    *,
    fmt: Format = gpu_hours,
    maximum: float | None = None,
    first_column: str = "",
    extra_columns: Sequence[tuple[str, Sequence[str]]] = (),
) -> Chart:
    """Horizontal bars, one group per category, one bar per series in each group;
    `extra_columns` (header, a text per category) go in the table only."""
    for s in series:
        if len(s.values) != len(categories):
            raise ValueError(f"series {s.name!r} has {len(s.values)} values")
    top = max((v for s in series for v in s.values if v is not None), default=0.0)
    end = maximum if maximum is not None else nice_maximum(top)
    plot_x, plot_w = float(LABEL_WIDTH), float(WIDTH - LABEL_WIDTH - VALUE_ROOM)
    group = len(series) * (BAR + BAR_GAP) - BAR_GAP
    legend = _legend(series, TOP)
    y = TOP + (LEGEND if legend else 0)
    plot_y = y
    bars, labels = [], []
    for i, name in enumerate(categories):
        labels.append(
            Text(
                plot_x - 8,
                y + group / 2 + 5,
                _short(name),
                title=name if len(name) > MAX_LABEL else "",
            )
        )
        for n, s in enumerate(series):
            value = s.values[i]
            width = 0.0 if value is None else plot_w * max(0.0, min(value, end)) / end
            text = _("n/a") if value is None else fmt(value)
            bars.append(
                Bar(
                    plot_x,
                    y,
                    width,
                    BAR,
                    PATTERNS[n % len(PATTERNS)],
                    text,
                    plot_x + width + 4,
                    y + BAR - 4,
                )
            )
            y += BAR + BAR_GAP
        y += GROUP_GAP - BAR_GAP
    plot_h = max(y - plot_y - GROUP_GAP + BAR_GAP, BAR)
    grid = tuple(plot_x + plot_w * k / 4 for k in range(5))
    ticks = tuple(
        Text(x, plot_y + plot_h + 18, fmt(end * k / 4), anchor="middle") for k, x in enumerate(grid)
    )
    headers, rows = _table(categories, series, fmt, first_column or title)
    headers = (*headers, *(name for name, _ in extra_columns))
    rows = tuple((*row, *(cells[i] for _, cells in extra_columns)) for i, row in enumerate(rows))
    return Chart(
        id=chart_id,
        title=title,
        desc=_describe(categories, series, fmt),
        width=WIDTH,
        height=int(plot_y + plot_h + AXIS),
        bars=tuple(bars),
        labels=tuple(labels),
        ticks=ticks,
        grid=grid,
        legend=legend,
        plot=(plot_x, plot_y, plot_w, plot_h),
        headers=headers,
        rows=rows,
    )


def column_chart(
    chart_id: str,
    title: str,
    days: Sequence[dt.date],
    values: Sequence[float],
    *,
    series_name: str | None = None,
    fmt: Format = gpu_hours,
    first_column: str = "",
) -> Chart:
    """Vertical bars over time, one per day or week, the oldest on the left."""
    height, left, right, bottom = 220.0, 64.0, 16.0, 40.0
    plot_x, plot_y = left, float(TOP + 10)
    plot_w, plot_h = WIDTH - left - right, height - plot_y - bottom
    end = nice_maximum(max(values, default=0.0))
    slot = plot_w / max(len(values), 1)
    every = max(1, math.ceil(len(values) / 8))  # at most 8 dates under the axis
    bars, labels = [], []
    for n, (day, value) in enumerate(zip(days, values, strict=True)):
        h = plot_h * max(0.0, value) / end
        x = plot_x + slot * n + slot * 0.15
        bars.append(
            Bar(
                x,
                plot_y + plot_h - h,
                slot * 0.7,
                h,
                "solid",
                fmt(value) if value else "",
                x + slot * 0.35,
                plot_y + plot_h - h - 4,
                anchor="middle",
            )
        )
        if n % every == 0:
            labels.append(
                Text(
                    x + slot * 0.35,
                    plot_y + plot_h + 16,
                    format_date(day, "d MMM", locale=LOCALES[language()]),
                    "middle",
                )
            )
    grid = tuple(plot_y + plot_h - plot_h * k / 4 for k in range(5))
    ticks = tuple(Text(plot_x - 6, y + 4, fmt(end * k / 4)) for k, y in enumerate(grid))
    series = [Series(series_name or _("GPU-hours"), tuple(values))]
    names = [day.isoformat() for day in days]
    headers, rows = _table(names, series, fmt, first_column or _("Week of"))
    return Chart(
        id=chart_id,
        title=title,
        desc=_describe(names, series, fmt),
        width=WIDTH,
        height=int(height),
        bars=tuple(bars),
        labels=tuple(labels),
        ticks=ticks,
        grid=grid,
        legend=(),
        plot=(plot_x, plot_y, plot_w, plot_h),
        headers=headers,
        rows=rows if any(values) else (),
        columns=True,
    )


def _describe(categories: Sequence[str], series: Sequence[Series], fmt: Format) -> str:
    """The chart's figures in one sentence, for the SVG's <desc>."""
    if not categories:
        return _("No figures for this period.")
    parts = []
    for i, name in enumerate(categories[:20]):
        values = ", ".join(
            f"{s.name} {_('n/a') if s.values[i] is None else fmt(s.values[i] or 0.0)}"
            for s in series
        )
        parts.append(f"{name}: {values}")
    more = ""
    if len(categories) > 20:
        more = _("; and %(count)d more in the table") % {"count": len(categories) - 20}
    return "; ".join(parts) + more + "."
