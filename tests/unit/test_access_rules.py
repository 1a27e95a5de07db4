"""The pure access rules (no database): eligibility, project ids, intake periods, cut-offs,
month arithmetic and review thresholds, checked against the real catalog's access modes."""

from __future__ import annotations

import calendar
import datetime as dt
import itertools
import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fabbrica.catalog.loader import load_catalog
from fabbrica.catalog.model import AccessMode
from fabbrica.core.access import (
    MAX_GPU_HOURS,
    Applicant,
    GrantRequest,
    Intake,
    Refusal,
    add_months,
    eligibility_refusals,
    intake_period,
    next_cutoff,
    project_id,
    review_status,
)
from fabbrica.core.billing import MIN_BILLABLE_GPU_HOURS

CATALOG = load_catalog()
EU = CATALOG.eligibility.countries
IT4LIA_GPUS = frozenset({"a100"})


def mode(mode_id: str) -> AccessMode:
    found = CATALOG.access_mode(mode_id)
    assert found is not None, mode_id
    return found


PLAYGROUND = mode("playground")
FAST_LANE = mode("fast_lane")
LARGE_SCALE = mode("large_scale")
CUTOFF_MODES = [m for m in CATALOG.access_modes if m.intake is Intake.CUTOFFS]
CONTINUOUS_MODES = [m for m in CATALOG.access_modes if m.intake is Intake.CONTINUOUS]
STARTUP_IT = Applicant("IT", "startup")


def refusals(
    request: GrantRequest,
    *,
    access_mode: AccessMode = PLAYGROUND,
    applicant: Applicant = STARTUP_IT,
    gpu_models: frozenset[str] = IT4LIA_GPUS,
    call_open: bool = True,
    call_name: str = "it4lia-playground",
) -> list[Refusal]:
    return eligibility_refusals(
        applicant,
        access_mode,
        request,
        eligible_countries=EU,
        factory_gpu_models=gpu_models,
        call_open=call_open,
        call_name=call_name,
    )


def only(found: list[Refusal]) -> Refusal:
    assert len(found) == 1, found
    return found[0]


# --- the catalog modes these tests rely on ----------------------------------------------------


def test_the_catalog_modes_have_the_figures_these_tests_assume() -> None:
    assert (PLAYGROUND.max_gpu_hours, PLAYGROUND.duration_months) == (5000, (1, 2, 3))
    assert FAST_LANE.max_gpu_hours == 50000
    assert [t.value for t in FAST_LANE.organisation_types] == ["startup", "sme"]
    assert (LARGE_SCALE.min_gpu_hours, LARGE_SCALE.max_gpu_hours) == (50000, None)
    assert (LARGE_SCALE.intake, LARGE_SCALE.cutoffs_per_year) == (Intake.CUTOFFS, 24)
    assert "US" not in EU
    assert {"IT", "DE", "FR", "NO"} <= EU


# --- eligibility_refusals ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("access_mode", "applicant", "request_"),
    [
        (PLAYGROUND, STARTUP_IT, GrantRequest(1000, 2, None)),
        (PLAYGROUND, Applicant("DE", "large_industry"), GrantRequest(5000, 3, "a100")),
        (FAST_LANE, Applicant("NO", "sme"), GrantRequest(50000, 1, None)),
        (LARGE_SCALE, Applicant("FR", "large_industry"), GrantRequest(50000, 12, "a100")),
        (LARGE_SCALE, STARTUP_IT, GrantRequest(MAX_GPU_HOURS, 6, None)),
        (mode("ai_for_science"), Applicant("IT", "academia"), GrantRequest(0.5, 6, None)),
    ],
)
def test_an_eligible_request_has_no_refusal(
    access_mode: AccessMode, applicant: Applicant, request_: GrantRequest
) -> None:
    assert refusals(request_, access_mode=access_mode, applicant=applicant) == []


def test_a_closed_call_is_refused_naming_the_call() -> None:
    refusal = only(
        refusals(GrantRequest(1000, 2, None), call_open=False, call_name="it4lia-large-scale")
    )
    assert refusal.field == "call"
    assert refusal.message == "call it4lia-large-scale is closed; apply when it reopens"


@pytest.mark.parametrize("country", ["US", "CN", "XX"])
def test_a_country_outside_the_eu_and_participating_states_is_refused(country: str) -> None:
    refusal = only(refusals(GrantRequest(1000, 2, None), applicant=Applicant(country, "startup")))
    assert refusal.field == "country"
    assert refusal.message.startswith(f"organisation country {country} is not eligible")
    assert "EU member state or a EuroHPC participating state" in refusal.message


@pytest.mark.parametrize(("written", "catalog"), [("GB", "UK"), ("UK", "UK"), ("EL", "GR")])
def test_the_eu_codes_el_and_uk_are_the_same_countries_as_iso_gr_and_gb(
    written: str, catalog: str
) -> None:
    """The catalog lists UK (the EU's code) and GR (ISO's); an organisation may write either
    code of the same country and is eligible alike. The same rule refuses US."""
    for country, eligible in ((written, True), ("US", False)):
        found = eligibility_refusals(
            Applicant(country, "startup"),
            PLAYGROUND,
            GrantRequest(1000, 2, None),
            eligible_countries={catalog, "IT"},
            factory_gpu_models=set(),
            call_open=True,
            call_name="x",
        )
        assert [r.field for r in found] == ([] if eligible else ["country"]), country


def test_an_organisation_type_the_mode_does_not_admit_is_refused_with_the_admitted_ones() -> None:
    refusal = only(
        refusals(
            GrantRequest(1000, 2, None),
            access_mode=FAST_LANE,
            applicant=Applicant("IT", "academia"),
        )
    )
    assert refusal.field == "organisation_type"
    assert (
        refusal.message == "Fast Lane does not admit academia organisations (admits: startup, sme)"
    )


def test_gpu_hours_below_the_minimum_of_large_scale() -> None:
    refusal = only(refusals(GrantRequest(1000, 6, None), access_mode=LARGE_SCALE))
    assert refusal.field == "gpu_hours"
    assert refusal.message == "Large Scale starts at 50,000 GPU-hours; 1,000 requested"


def test_gpu_hours_above_the_maximum_of_fast_lane() -> None:
    refusal = only(refusals(GrantRequest(60000, 2, None), access_mode=FAST_LANE))
    assert refusal.field == "gpu_hours"
    assert refusal.message == "Fast Lane grants at most 50,000 GPU-hours; 60,000 requested"


@pytest.mark.parametrize(
    "hours",
    [0.0, -0.0, -1.0, math.nan, math.inf, -math.inf, MAX_GPU_HOURS + 1, 1e300],
    ids=["zero", "minus-zero", "negative", "nan", "inf", "minus-inf", "above-max", "huge"],
)
def test_gpu_hours_that_are_no_usable_number_are_refused_with_the_range(hours: float) -> None:
    # large_scale has no maximum of its own: only the global bound applies
    for access_mode in (PLAYGROUND, LARGE_SCALE):
        refusal = only(
            refusals(
                GrantRequest(hours, 6 if access_mode is LARGE_SCALE else 2, None),
                access_mode=access_mode,
            )
        )
        assert refusal.field == "gpu_hours"
        if not math.isfinite(hours):
            assert refusal.message == "GPU-hours must be a finite number"
        elif hours > 0:
            assert refusal.message.startswith("GPU-hours must be at most 10,000,000;")
        else:
            assert refusal.message.startswith("GPU-hours must be at least 0.0167 (one GPU-minute")


def test_a_fractional_request_just_below_the_minimum_is_not_shown_as_the_minimum() -> None:
    refusal = only(refusals(GrantRequest(49_999.5, 6, None), access_mode=LARGE_SCALE))
    assert refusal.field == "gpu_hours"
    assert "50,000 requested" not in refusal.message


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_fast_lane_refuses_gpu_hours_exactly_outside_0_to_50000(hours: float) -> None:
    found = [r for r in refusals(GrantRequest(hours, 2, None), access_mode=FAST_LANE)]
    assert [r.field for r in found if r.field != "gpu_hours"] == []
    valid = math.isfinite(hours) and MIN_BILLABLE_GPU_HOURS <= hours <= 50000
    assert len(found) == (0 if valid else 1)


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_large_scale_refuses_gpu_hours_exactly_outside_50000_to_the_global_max(
    hours: float,
) -> None:
    found = refusals(GrantRequest(hours, 6, None), access_mode=LARGE_SCALE)
    valid = math.isfinite(hours) and 50000 <= hours <= MAX_GPU_HOURS
    assert [r.field for r in found] == ([] if valid else ["gpu_hours"])


@pytest.mark.parametrize("months", [0, 4, 6, 12, -1])
def test_months_the_mode_does_not_offer_are_refused_with_the_offered_ones(months: int) -> None:
    refusal = only(refusals(GrantRequest(1000, months, None)))
    assert refusal.field == "months"
    assert refusal.message == f"Playground offers 1, 2, 3 months, not {months}"


def test_a_gpu_model_the_factory_does_not_offer_is_refused_with_the_offered_ones() -> None:
    refusal = only(
        refusals(GrantRequest(1000, 2, "h100"), gpu_models=frozenset({"mi250x", "a100"}))
    )
    assert refusal.field == "gpu_model"
    assert refusal.message == "this factory does not offer h100 GPUs (offers: a100, mi250x)"


def test_a_factory_without_operating_gpus_offers_none() -> None:
    refusal = only(refusals(GrantRequest(1000, 2, "a100"), gpu_models=frozenset()))
    assert refusal.field == "gpu_model"
    assert refusal.message == "this factory does not offer a100 GPUs (offers: none)"


def test_no_gpu_model_asked_for_means_any_model() -> None:
    assert refusals(GrantRequest(1000, 2, None), gpu_models=frozenset()) == []


def test_every_broken_rule_is_reported_most_basic_first() -> None:
    found = refusals(
        GrantRequest(60000, 6, "h100"),
        access_mode=FAST_LANE,
        applicant=Applicant("US", "academia"),
        call_open=False,
        call_name="it4lia-fast-lane",
    )
    assert [r.field for r in found] == [
        "call",
        "country",
        "organisation_type",
        "gpu_hours",
        "months",
        "gpu_model",
    ]
    assert found[0].message == "call it4lia-fast-lane is closed; apply when it reopens"
    assert "country US is not eligible" in found[1].message
    assert "Fast Lane does not admit academia" in found[2].message
    assert found[3].message == "Fast Lane grants at most 50,000 GPU-hours; 60,000 requested"
    assert found[4].message == "Fast Lane offers 1, 2, 3 months, not 6"
    assert found[5].message == "this factory does not offer h100 GPUs (offers: a100)"


def test_a_bad_number_and_a_bad_size_are_one_gpu_hours_refusal() -> None:
    found = refusals(GrantRequest(math.nan, 6, None), access_mode=LARGE_SCALE)
    assert [r.field for r in found] == ["gpu_hours"]


# --- project_id -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((2026, "PG", 11, 7), "FAB-AIF-2026PG11-0007"),
        ((2026, "LS", 24, 1234), "FAB-AIF-2026LS24-1234"),
        ((2027, "XS", 1, 1), "FAB-AIF-2027XS01-0001"),
    ],
)
def test_project_id_format(args: tuple[int, str, int, int], expected: str) -> None:
    assert project_id(*args) == expected


PROJECT_ID = re.compile(r"^FAB-AIF-(\d{4})([A-Z]{2})(\d{2})-(\d{4})$")


@given(
    st.integers(1000, 9999),
    st.sampled_from([m.code for m in CATALOG.access_modes]),
    st.integers(1, 99),
    st.integers(1, 9999),
)
def test_project_id_parses_back_into_its_parts(
    year: int, code: str, period: int, sequence: int
) -> None:
    found = PROJECT_ID.match(project_id(year, code, period, sequence))
    assert found is not None
    assert (int(found[1]), found[2], int(found[3]), int(found[4])) == (
        year,
        code,
        period,
        sequence,
    )


# --- intake_period ----------------------------------------------------------------------------

YEARS = [2023, 2024, 2025, 2026, 2100, 2000]  # 2024, 2000 leap; 2100 not


def test_continuous_intake_period_on_the_day_of_a_project_id_example() -> None:
    assert intake_period(PLAYGROUND, dt.date(2026, 11, 21)) == 11


@pytest.mark.parametrize("year", YEARS)
@pytest.mark.parametrize("access_mode", CONTINUOUS_MODES, ids=lambda m: m.id)
def test_continuous_intake_counts_months_from_1_jan_to_31_dec(
    access_mode: AccessMode, year: int
) -> None:
    assert intake_period(access_mode, dt.date(year, 1, 1)) == 1
    assert intake_period(access_mode, dt.date(year, 1, 31)) == 1
    assert intake_period(access_mode, dt.date(year, 2, 1)) == 2
    assert intake_period(access_mode, dt.date(year, 2, 28)) == 2
    assert intake_period(access_mode, dt.date(year, 12, 31)) == 12
    for month in range(1, 13):
        assert intake_period(access_mode, dt.date(year, month, 15)) == month


@pytest.mark.parametrize(
    "day",
    [dt.date(2026, 3, 1), dt.date(2024, 3, 1), dt.date(2026, 7, 1), dt.date(2026, 12, 1)],
)
def test_continuous_intake_period_is_the_calendar_month_on_the_first(day: dt.date) -> None:
    assert intake_period(PLAYGROUND, day) == day.month


@given(st.dates())
def test_continuous_intake_period_is_the_calendar_month(day: dt.date) -> None:
    assert intake_period(PLAYGROUND, day) == day.month


@given(st.dates())
def test_continuous_intake_period_is_between_1_and_12(day: dt.date) -> None:
    assert 1 <= intake_period(PLAYGROUND, day) <= 12


@pytest.mark.parametrize("year", YEARS)
def test_large_scale_has_24_cutoff_periods_from_1_jan_to_31_dec(year: int) -> None:
    assert intake_period(LARGE_SCALE, dt.date(year, 1, 1)) == 1
    assert intake_period(LARGE_SCALE, dt.date(year, 1, 2)) == 1
    assert intake_period(LARGE_SCALE, dt.date(year, 12, 31)) == 24
    assert intake_period(LARGE_SCALE, dt.date(year, 12, 30)) == 24


@pytest.mark.parametrize("year", YEARS)
@pytest.mark.parametrize("access_mode", CUTOFF_MODES, ids=lambda m: m.id)
def test_cutoff_periods_cover_the_year_in_order_and_evenly(
    access_mode: AccessMode, year: int
) -> None:
    periods = access_mode.cutoffs_per_year
    assert periods is not None
    days = 366 if calendar.isleap(year) else 365
    found = [
        intake_period(access_mode, dt.date(year, 1, 1) + dt.timedelta(days=i)) for i in range(days)
    ]
    # 1, 1, ..., 2, 2, ..., periods: each period once, in order, none skipped
    assert found[0] == 1
    assert found[-1] == periods
    assert all(b - a in (0, 1) for a, b in itertools.pairwise(found))
    lengths = [found.count(p) for p in range(1, periods + 1)]
    assert sum(lengths) == days
    assert set(lengths) <= {days // periods, days // periods + 1}


@given(st.sampled_from(CATALOG.access_modes), st.dates())
def test_intake_period_is_between_1_and_the_periods_of_the_mode(
    access_mode: AccessMode, day: dt.date
) -> None:
    periods = 12 if access_mode.intake is Intake.CONTINUOUS else access_mode.cutoffs_per_year
    assert periods is not None
    assert 1 <= intake_period(access_mode, day) <= periods


# --- next_cutoff ------------------------------------------------------------------------------


@given(st.sampled_from(CONTINUOUS_MODES), st.dates())
def test_continuous_modes_have_no_cutoff(access_mode: AccessMode, day: dt.date) -> None:
    assert next_cutoff(access_mode, day) is None


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (dt.date(2026, 1, 1), dt.date(2026, 1, 17)),
        (dt.date(2026, 1, 16), dt.date(2026, 1, 17)),
        (dt.date(2026, 1, 17), dt.date(2026, 2, 1)),
        (dt.date(2026, 12, 31), dt.date(2027, 1, 1)),
        (dt.date(2024, 12, 31), dt.date(2025, 1, 1)),
        (dt.date(2024, 2, 29), dt.date(2024, 3, 2)),
    ],
)
def test_large_scale_next_cutoff(day: dt.date, expected: dt.date) -> None:
    assert next_cutoff(LARGE_SCALE, day) == expected


@given(st.dates(max_value=dt.date(9998, 12, 31)))
def test_a_yearly_cutoff_is_the_next_1_jan(day: dt.date) -> None:
    assert next_cutoff(mode("extreme_scale"), day) == dt.date(day.year + 1, 1, 1)


@given(st.sampled_from(CUTOFF_MODES), st.dates(max_value=dt.date(9998, 12, 31)))
def test_next_cutoff_is_after_the_date_and_starts_the_next_period(
    access_mode: AccessMode, day: dt.date
) -> None:
    cutoff = next_cutoff(access_mode, day)
    assert cutoff is not None
    assert day < cutoff <= dt.date(day.year + 1, 1, 1)
    period = intake_period(access_mode, day)
    if cutoff.year == day.year:
        assert intake_period(access_mode, cutoff) == period + 1
    else:
        assert period == access_mode.cutoffs_per_year
        assert intake_period(access_mode, cutoff) == 1
    # every day up to the cut-off is in the same period as `day`
    assert intake_period(access_mode, cutoff - dt.timedelta(days=1)) == period


# --- add_months -------------------------------------------------------------------------------


def at(year: int, month: int, day: int, hour: int = 12, minute: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("start", "months", "expected"),
    [
        (at(2026, 1, 31), 1, at(2026, 2, 28)),
        (at(2024, 1, 31), 1, at(2024, 2, 29)),
        (at(2100, 1, 31), 1, at(2100, 2, 28)),
        (at(2000, 1, 31), 1, at(2000, 2, 29)),
        (at(2026, 3, 31), 1, at(2026, 4, 30)),
        (at(2026, 11, 30), 1, at(2026, 12, 30)),
        (at(2026, 12, 31), 2, at(2027, 2, 28)),
        (at(2026, 11, 21), 1, at(2026, 12, 21)),
        (at(2026, 11, 21), 14, at(2028, 1, 21)),
        (at(2024, 2, 29), 12, at(2025, 2, 28)),
        (at(2024, 2, 29), 48, at(2028, 2, 29)),
        (at(2026, 8, 31), 6, at(2027, 2, 28)),
        (at(2026, 5, 15, 23, 59), 0, at(2026, 5, 15, 23, 59)),
    ],
)
def test_add_months_clamps_to_the_last_day_of_the_month(
    start: dt.datetime, months: int, expected: dt.datetime
) -> None:
    found = add_months(start, months)
    assert found == expected
    assert found.tzinfo is dt.UTC


@given(
    st.datetimes(
        min_value=dt.datetime(1900, 1, 1),
        max_value=dt.datetime(2999, 12, 31),
        timezones=st.just(dt.UTC),
    ),
    st.integers(1, 240),
)
def test_add_months_moves_exactly_n_calendar_months_forward(start: dt.datetime, n: int) -> None:
    end = add_months(start, n)
    assert end > start
    assert (end.year * 12 + end.month) - (start.year * 12 + start.month) == n
    last = calendar.monthrange(end.year, end.month)[1]
    assert end.day == min(start.day, last)
    assert end.timetz() == start.timetz()
    assert 28 * n - 3 <= (end - start).days <= 31 * n


# --- review_status ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scores", "min_reviews", "min_average", "expected"),
    [
        ([], 2, 3.0, (0, None, False, False)),
        ([5], 2, 3.0, (1, 5.0, False, False)),
        ([4, 2], 2, 3.0, (2, 3.0, True, True)),
        ([3, 2], 2, 3.0, (2, 2.5, True, False)),
        ([5, 5, 1], 2, 3.0, (3, 11 / 3, True, True)),
        ([1, 1], 2, None, (2, 1.0, True, True)),
        ([], 0, None, (0, None, True, True)),
        ([2, 2, 2], 3, 3.0, (3, 2.0, True, False)),
    ],
)
def test_review_status(
    scores: list[int],
    min_reviews: int,
    min_average: float | None,
    expected: tuple[int, float | None, bool, bool],
) -> None:
    status = review_status(scores, min_reviews, min_average)
    assert (status.reviews, status.average, status.complete, status.passes) == expected


@given(
    st.lists(st.integers(1, 5), max_size=10),
    st.integers(0, 5),
    st.none() | st.floats(1, 5),
)
def test_review_status_passes_only_when_complete_and_the_average_reaches_the_minimum(
    scores: list[int], min_reviews: int, min_average: float | None
) -> None:
    status = review_status(scores, min_reviews, min_average)
    assert status.reviews == len(scores)
    assert status.complete == (len(scores) >= min_reviews)
    if scores:
        assert status.average is not None
        assert min(scores) <= status.average <= max(scores)
    else:
        assert status.average is None
    if status.passes:
        assert status.complete
        assert min_average is None or (status.average is not None and status.average >= min_average)
    elif status.complete and status.average is not None:
        assert min_average is not None and status.average < min_average
