"""Working days: weekends and the public holidays of the factory's country left out."""

from __future__ import annotations

import datetime as dt

import pytest

from fabbrica.core.workdays import (
    add_working_days,
    is_working_day,
    percentile,
    working_days,
    working_days_between,
)

D = dt.date


@pytest.mark.parametrize(
    ("start", "end", "country", "days"),
    [
        (D(2026, 11, 27), D(2026, 11, 30), "IT", 1),  # Friday to Monday: the weekend is out
        (D(2026, 11, 23), D(2026, 11, 23), "IT", 0),  # decided the day it came in
        (D(2026, 11, 23), D(2026, 11, 20), "IT", 0),  # backwards: none
        (D(2026, 11, 20), D(2026, 11, 27), "IT", 5),  # a whole week
        # Italy: Republic Day, Tuesday 2 June 2026; Finland works that day
        (D(2026, 5, 29), D(2026, 6, 3), "IT", 2),
        (D(2026, 5, 29), D(2026, 6, 3), "FI", 3),
        # Finland: Ascension Day, Thursday 14 May 2026; Italy works that day
        (D(2026, 5, 12), D(2026, 5, 18), "FI", 3),
        (D(2026, 5, 12), D(2026, 5, 18), "IT", 4),
        # Finland: Christmas Eve (Thursday) and Christmas Day (Friday) 2026, then a weekend
        (D(2026, 12, 23), D(2026, 12, 28), "FI", 1),
        (D(2026, 12, 23), D(2026, 12, 28), "IT", 2),  # Italy works on Christmas Eve
        (D(2026, 12, 30), D(2027, 1, 7), "IT", 4),  # over New Year and Epiphany
        (D(2026, 5, 29), D(2026, 6, 3), "XX", 3),  # a country without holidays: weekends only
    ],
)
def test_working_days(start: dt.date, end: dt.date, country: str, days: int) -> None:
    assert working_days(start, end, country) == days


def test_working_days_agree_with_counting_day_by_day() -> None:
    first = D(2026, 1, 1)
    for country in ("IT", "FI", "DE"):
        for span in range(0, 400, 7):
            last = first + dt.timedelta(days=span)
            by_day = sum(
                is_working_day(first + dt.timedelta(days=n), country) for n in range(1, span + 1)
            )
            assert working_days(first, last, country) == by_day


def test_instants_count_by_their_utc_date() -> None:
    rome = dt.timezone(dt.timedelta(hours=1))
    friday_late = dt.datetime(2026, 11, 27, 23, 30, tzinfo=dt.UTC)
    monday_early_rome = dt.datetime(2026, 11, 30, 0, 30, tzinfo=rome)  # Sunday 23:30 UTC
    assert working_days_between(friday_late, monday_early_rome, "IT") == 0
    assert working_days_between(friday_late, friday_late + dt.timedelta(days=3), "IT") == 1


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 0.9) is None
    assert percentile([1, 2, 3, 4], 0.5) == 2
    assert percentile([1, 2, 3, 4], 0.9) == 4
    assert percentile(list(range(1, 11)), 0.9) == 9
    assert percentile([5], 0.9) == 5


@pytest.mark.parametrize(
    ("start", "days", "deadline"),
    [
        (dt.date(2026, 11, 20), 0, dt.date(2026, 11, 20)),  # a Friday: no day to count
        (dt.date(2026, 11, 20), 1, dt.date(2026, 11, 23)),  # the weekend skipped
        (dt.date(2026, 11, 30), 10, dt.date(2026, 12, 15)),  # 8 Dec is a holiday in Italy
        (dt.date(2026, 12, 23), 2, dt.date(2026, 12, 28)),  # Christmas and St Stephen's
    ],
)
def test_a_deadline_in_working_days_is_the_first_day_that_reaches_them(
    start: dt.date, days: int, deadline: dt.date
) -> None:
    assert add_working_days(start, days, "IT") == deadline
    assert working_days(start, deadline, "IT") == days
    if days:
        assert working_days(start, deadline - dt.timedelta(days=1), "IT") == days - 1
