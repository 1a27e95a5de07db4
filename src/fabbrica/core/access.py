"""Access rules: eligibility, project ids, review thresholds, states. Pure functions."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from fabbrica.core.billing import gpu_hours_problem
from fabbrica.core.countries import EU_CODES

DECLARATION = (
    "I declare that the resources requested will be used for civilian purposes only, and "
    "that the work complies with Regulation (EU) 2024/1689 (the EU AI Act): no prohibited "
    "AI practice, and the obligations for the system's risk class are met."
)
MAX_GPU_HOURS = 10_000_000.0  # no request is larger than a gigafactory-year
MAX_ABSTRACT_CHARS = 20_000
# Modes where a project holds at most one live allocation per call: a second application
# while one is live (or pending) is refused; more hours come as an operator's top-up.
ONE_LIVE_ALLOCATION_MODES = frozenset({"playground"})


class Intake(StrEnum):
    """How a call takes proposals: at any time, or by cut-offs spread over the year."""

    CONTINUOUS = "continuous"
    CUTOFFS = "cutoffs"


class AccessMode(Protocol):
    """The rules of an access mode that these functions apply (the catalog's `AccessMode`
    holds them, with the rest of what an operator writes about the mode)."""

    @property
    def name(self) -> str: ...
    @property
    def organisation_types(self) -> Sequence[str]: ...
    @property
    def min_gpu_hours(self) -> float | None: ...
    @property
    def max_gpu_hours(self) -> float | None: ...
    @property
    def duration_months(self) -> Sequence[int]: ...
    @property
    def intake(self) -> Intake: ...
    @property
    def cutoffs_per_year(self) -> int | None: ...


class ProposalState(StrEnum):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    IN_REVIEW = "in_review"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"

    @property
    def open(self) -> bool:
        return self in {ProposalState.DRAFT, ProposalState.SUBMITTED, ProposalState.IN_REVIEW}


class AllocationState(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    TERMINATED = "terminated"
    EXPIRED = "expired"


# live: not ended (an allocation suspended for a while is still the project's)
LIVE = (AllocationState.ACTIVE.value, AllocationState.SUSPENDED.value)


class CallState(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Refusal:
    """One rule a request breaks, said so that the applicant can act on it. `message` is
    `template` (English, with `{name}` places) filled with `values`, so that a reader in
    another language gets the same sentence translated (the portal's catalogs)."""

    field: str
    message: str
    template: str = ""
    values: tuple[tuple[str, str | int | float], ...] = ()


# The wording of every refusal made from a template, by name: the portal's catalogs carry
# a translation of each (tests/portal/test_languages.py checks that none is missing).
REFUSAL_TEMPLATES = {
    "call_closed": "call {call} is closed; apply when it reopens",
    "country": "organisation country {country} is not eligible: only organisations "
    "established in an EU member state or a EuroHPC participating state may apply",
    "organisation_type": "{mode} does not admit {type} organisations (admits: {allowed})",
    "months": "{mode} offers {offered} months, not {months}",
    "gpu_model": "this factory does not offer {model} GPUs (offers: {offered})",
    "gpu_hours_min": "{mode} starts at {minimum} GPU-hours; {hours} requested",
    "gpu_hours_max": "{mode} grants at most {maximum} GPU-hours; {hours} requested",
    "report_overdue": "the final report of project {project} is overdue (due {due}); submit "
    "it before applying again",
    "declaration": "the declaration of civilian use and EU AI Act compliance is required",
}


def refused(field: str, name: str, **values: str | int | float) -> Refusal:
    """A refusal worded by REFUSAL_TEMPLATES[name] (floats: GPU-hours, grouped)."""
    template = REFUSAL_TEMPLATES[name]
    shown = {k: _hours(v) if isinstance(v, float) else str(v) for k, v in values.items()}
    return Refusal(field, template.format(**shown), template, tuple(values.items()))


@dataclass(frozen=True, slots=True)
class Applicant:
    country: str
    organisation_type: str


@dataclass(frozen=True, slots=True)
class GrantRequest:
    """What a proposal asks for: GPU-hours, for months, of a GPU model (None: any)."""

    gpu_hours: float
    months: int
    gpu_model: str | None


def eligibility_refusals(
    applicant: Applicant,
    mode: AccessMode,
    request: GrantRequest,
    *,
    eligible_countries: Collection[str],
    factory_gpu_models: Collection[str],
    call_open: bool,
    call_name: str,
) -> list[Refusal]:
    """Every rule the request breaks (empty: eligible). Order: the most basic first."""
    refusals: list[Refusal] = []
    if not call_open:
        refusals.append(refused("call", "call_closed", call=call_name))
    if same_country(applicant.country) not in {same_country(c) for c in eligible_countries}:
        refusals.append(refused("country", "country", country=applicant.country))
    if applicant.organisation_type not in mode.organisation_types:
        allowed = ", ".join(mode.organisation_types)
        refusals.append(
            refused(
                "organisation_type",
                "organisation_type",
                mode=mode.name,
                type=applicant.organisation_type,
                allowed=allowed,
            )
        )
    refusals += _size_refusals(mode, request)
    if request.months not in mode.duration_months:
        offered = ", ".join(str(m) for m in mode.duration_months)
        refusals.append(
            refused("months", "months", mode=mode.name, offered=offered, months=request.months)
        )
    if request.gpu_model and request.gpu_model not in factory_gpu_models:
        offered = ", ".join(sorted(factory_gpu_models)) or "none"
        refusals.append(refused("gpu_model", "gpu_model", model=request.gpu_model, offered=offered))
    return refusals


def same_country(code: str) -> str:
    """One code per country: the EU's EL and UK read as ISO's GR and GB."""
    return EU_CODES.get(code, code)


def _size_refusals(mode: AccessMode, request: GrantRequest) -> list[Refusal]:
    hours = request.gpu_hours
    problem = gpu_hours_problem(hours, maximum=MAX_GPU_HOURS)
    if problem is not None:
        return [Refusal("gpu_hours", problem)]
    if mode.min_gpu_hours is not None and hours < mode.min_gpu_hours:
        minimum = float(mode.min_gpu_hours)
        return [
            refused(
                "gpu_hours", "gpu_hours_min", mode=mode.name, minimum=minimum, hours=float(hours)
            )
        ]
    if mode.max_gpu_hours is not None and hours > mode.max_gpu_hours:
        maximum = float(mode.max_gpu_hours)
        return [
            refused(
                "gpu_hours", "gpu_hours_max", mode=mode.name, maximum=maximum, hours=float(hours)
            )
        ]
    return []


def _hours(value: float) -> str:
    """GPU-hours as written, never rounded into a contradiction (49,999.5 stays so)."""
    return f"{value:,.12g}"


def intake_period(mode: AccessMode, when: dt.date) -> int:
    """The number of the intake period `when` falls in: the cut-off part of a project id.

    Continuous intake counts calendar months (1..12); cut-offs divide the year evenly.
    """
    if mode.intake is Intake.CONTINUOUS:
        return when.month
    periods = mode.cutoffs_per_year or 12
    day = when.timetuple().tm_yday - 1
    days = 366 if _leap(when.year) else 365
    return min(periods, day * periods // days + 1)


def next_cutoff(mode: AccessMode, when: dt.date) -> dt.date | None:
    """The first day of the next intake period for a cut-off mode (None: continuous)."""
    if mode.intake is Intake.CONTINUOUS:
        return None
    periods = mode.cutoffs_per_year or 12
    days = 366 if _leap(when.year) else 365
    period = intake_period(mode, when)
    if period >= periods:
        return dt.date(when.year + 1, 1, 1)
    return dt.date(when.year, 1, 1) + dt.timedelta(days=math.ceil(period * days / periods))


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def project_id(year: int, mode_code: str, period: int, sequence: int) -> str:
    """A EuroHPC-style project id: FAB-AIF-2026PG11-0007 (mode, year, cut-off, sequence)."""
    return f"FAB-AIF-{year}{mode_code}{period:02d}-{sequence:04d}"


def add_months(start: dt.datetime, months: int) -> dt.datetime:
    """`start` plus whole months, clamped to the month's last day (31 Jan + 1 = 28/29 Feb)."""
    month_index = start.month - 1 + months
    year, month = start.year + month_index // 12, month_index % 12 + 1
    last = (dt.date(year + month // 12, month % 12 + 1, 1) - dt.timedelta(days=1)).day
    return start.replace(year=year, month=month, day=min(start.day, last))


@dataclass(frozen=True, slots=True)
class ReviewStatus:
    reviews: int
    average: float | None
    complete: bool  # enough reviews for a decision
    passes: bool  # the average reaches the call's minimum


def review_status(
    scores: Sequence[int], min_reviews: int, min_average: float | None
) -> ReviewStatus:
    average = sum(scores) / len(scores) if scores else None
    complete = len(scores) >= min_reviews
    passes = complete and (min_average is None or (average is not None and average >= min_average))
    return ReviewStatus(len(scores), average, complete, passes)
