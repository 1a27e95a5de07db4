"""Working days: weekdays that are not public holidays of a country.

Decision targets are counted in working days of the factory's country (docs/reporting.md):
the days from a proposal's submission to its decision are the working days `d` with
`start date < d <= end date` (UTC dates), so a proposal submitted on a Friday and decided on
the next Monday took 1 working day, and one decided on the day it came in took 0. Public
holidays come from the `holidays` library; a country it does not know has only weekends.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from functools import cache

import holidays


@cache
def public_holidays(country: str, year: int) -> frozenset[dt.date]:
    """The public holidays of `country` (ISO 3166-1 alpha-2) in `year` (none if unknown)."""
    try:
        days = holidays.country_holidays(country, years=year)
    except NotImplementedError:
        return frozenset()
    return frozenset(days)


def is_working_day(day: dt.date, country: str) -> bool:
    return day.weekday() < 5 and day not in public_holidays(country, day.year)


def working_days(start: dt.date, end: dt.date, country: str) -> int:
    """The working days `d` of `country` with `start < d <= end` (0 when `end <= start`)."""
    if end <= start:
        return 0
    days = (end - start).days
    weeks, rest = divmod(days, 7)
    # whole weeks have 5 weekdays each; the remaining days are looked at one by one
    weekdays = weeks * 5 + sum(
        1 for n in range(1, rest + 1) if (start + dt.timedelta(days=n)).weekday() < 5
    )
    off = sum(
        1
        for year in range(start.year, end.year + 1)
        for day in public_holidays(country, year)
        if start < day <= end and day.weekday() < 5
    )
    return weekdays - off


def add_working_days(start: dt.date, days: int, country: str) -> dt.date:
    """The first date `d` with `working_days(start, d, country) == days` (`start` for 0):
    the deadline of a target of `days` working days counted from `start`."""
    day, counted = start, 0
    while counted < days:
        day += dt.timedelta(days=1)
        counted += is_working_day(day, country)
    return day


def working_days_between(start: dt.datetime, end: dt.datetime, country: str) -> int:
    """`working_days` between two instants, taken as their UTC dates."""
    return working_days(_utc_date(start), _utc_date(end), country)


def _utc_date(moment: dt.datetime) -> dt.date:
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC)
    return moment.date()


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile: the smallest value with at least `fraction` of the
    values at or below it (None for no values). p50 of [1, 2, 3, 4] is 2, p90 is 4."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]
