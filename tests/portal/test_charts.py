"""The chart layout (portal/charts.py) with plain values, and its SVG as the template draws
it: bars in proportion, a pattern per series, values as text, the table, escaping."""

from __future__ import annotations

import datetime as dt

import pytest

from fabbrica.portal import charts
from fabbrica.portal.web import templates


@pytest.mark.parametrize(
    ("value", "axis"),
    [(0, 1), (0.4, 0.5), (1, 1), (7, 10), (60_000, 100_000), (25_000, 25_000), (101, 200)],
)
def test_the_axis_ends_at_a_round_number_at_or_above_the_largest_value(
    value: float, axis: float
) -> None:
    assert charts.nice_maximum(value) == axis


def test_bars_are_in_proportion_with_a_pattern_per_series_and_their_values() -> None:
    chart = charts.bar_chart(
        "c",
        "GPU-hours by member state",
        ["IT", "FI"],
        [charts.Series("Granted", (60_000, 20_000)), charts.Series("Used", (12.5, None))],
    )
    granted_it, used_it, granted_fi, used_fi = chart.bars
    plot_width = chart.plot[2]
    assert granted_it.width == pytest.approx(plot_width * 0.6)  # axis up to 100,000
    assert granted_fi.width == pytest.approx(plot_width * 0.2)
    assert (granted_it.pattern, used_it.pattern) == ("solid", "hatch")
    assert (granted_it.text, used_it.text, used_fi.text) == ("60,000", "12.5", "n/a")
    assert used_fi.width == 0
    assert [s.name for s in chart.legend] == ["Granted", "Used"]
    assert chart.rows == (("IT", "60,000", "12.5"), ("FI", "20,000", "n/a"))
    assert "IT: Granted 60,000, Used 12.5" in chart.desc


def test_the_svg_is_an_image_with_a_title_a_description_and_escaped_text() -> None:
    name = '<script>alert("x")</script>'
    chart = charts.bar_chart("c", "Share", [name], [charts.Series("Within", (0.5,))],
                             fmt=charts.percent, maximum=1.0, first_column="Mode")  # fmt: skip
    html = templates.from_string('{% from "chart.html" import chart %}{{ chart(c) }}').render(
        c=chart
    )
    assert 'role="img"' in html and 'aria-labelledby="c-svg-title c-desc"' in html
    assert '<title id="c-svg-title">Share</title>' in html and "50%" in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<caption>Share: the figures</caption>" in html


def test_a_column_chart_over_weeks_and_no_figures_without_usage() -> None:
    weeks = [dt.date(2026, 11, 2) + dt.timedelta(weeks=n) for n in range(4)]
    chart = charts.column_chart("u", "Usage", weeks, [0, 2, 8, 0])
    assert chart.bars[0].height == 0 and chart.bars[0].text == ""
    assert chart.bars[2].height == pytest.approx(chart.plot[3] * 0.8)  # axis up to 10
    assert chart.rows[2] == ("2026-11-16", "8") and not chart.empty
    assert charts.column_chart("u", "Usage", weeks, [0, 0, 0, 0]).empty
