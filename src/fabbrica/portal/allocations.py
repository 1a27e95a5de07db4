"""A member's allocations: GPU-hours used, reserved and granted, as a bar with the values
written beside it and a warning at 75 % and at 100 %; an allocation's page with its final
report (the PI writes it once the work is done)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from babel.numbers import format_decimal
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from fabbrica.core.errors import InvalidInput
from fabbrica.portal.i18n import LOCALES, language, number
from fabbrica.portal.web import (
    CsrfChecked,
    DbSession,
    PortalRoute,
    UserDep,
    ViewerDep,
    context,
    render,
    templates,
)
from fabbrica.services.access import allocations as allocations_service
from fabbrica.store.models import Allocation

router = APIRouter(route_class=PortalRoute, include_in_schema=False)
WARN_AT = 0.75


@dataclass(frozen=True)
class Balance:
    granted: float
    used: float
    reserved: float

    @property
    def taken(self) -> float:
        """The share of the grant used or reserved (1.0 when nothing was granted)."""
        return (self.used + self.reserved) / self.granted if self.granted > 0 else 1.0

    @property
    def percent(self) -> int:
        """Rounded down, so that 99.6 % never reads as used up."""
        return int(self.taken * 100)

    @property
    def level(self) -> str:
        return "full" if self.taken >= 1 else "warn" if self.taken >= WARN_AT else "ok"

    @property
    def used_width(self) -> float:
        return round(min(100.0, 100 * self.used / self.granted), 2) if self.granted > 0 else 100.0

    @property
    def reserved_width(self) -> float:
        if self.granted <= 0:
            return 0.0
        return round(min(100.0 - self.used_width, 100 * self.reserved / self.granted), 2)


def balance(allocation: Allocation) -> Balance:
    return Balance(
        allocation.granted_gpu_hours, allocation.used_gpu_hours, allocation.reserved_gpu_hours
    )


def hours(value: float) -> str:
    """GPU-hours as a reader wants them: small amounts (a first job's) stay visible."""
    if value == 0:
        return "0"
    if value < 0.0001:
        return f"< {number(0.0001, 4)}"
    if value < 10:  # up to 4 decimals, no trailing zeros, in the language's way
        return format_decimal(value, format="#,##0.####", locale=LOCALES[language()])
    return number(value, 1)


templates.globals["balance"] = balance
templates.filters["hours"] = hours


@router.get("/allocations", response_class=HTMLResponse)
def allocations_page(
    request: Request, who: ViewerDep, user: UserDep, session: DbSession
) -> HTMLResponse:
    found = allocations_service.list_allocations(session, user)
    return render(request, who, "allocations.html", allocations=found)


def _allocation_page(
    request: Request,
    who: ViewerDep,
    user: UserDep,
    session: DbSession,
    allocation_id: int,
    status: int = 200,
    error: InvalidInput | None = None,
    report: str = "",
) -> HTMLResponse:
    allocation = allocations_service.get_allocation(session, user, allocation_id)
    return render(
        request,
        who,
        "allocation.html",
        status,
        a=allocation,
        is_pi=allocation.project.pi_user_id == user.id,
        now=context(request).clock(),
        error=error,
        report=report,
    )


@router.get("/allocations/{allocation_id}", response_class=HTMLResponse)
def allocation_page(
    request: Request, who: ViewerDep, user: UserDep, session: DbSession, allocation_id: int
) -> HTMLResponse:
    return _allocation_page(request, who, user, session, allocation_id)


@router.post("/allocations/{allocation_id}/report", dependencies=[CsrfChecked])
def final_report(
    request: Request,
    who: ViewerDep,
    user: UserDep,
    session: DbSession,
    allocation_id: int,
    text: Annotated[str, Form(max_length=allocations_service.MAX_REPORT_CHARS + 1000)] = "",
) -> Response:
    allocations_service.get_allocation(session, user, allocation_id)  # another's: 404 first
    try:
        with session.begin_nested():  # a refusal undoes only this
            allocations_service.submit_final_report(
                session, user, allocation_id, text=text, now=context(request).clock()
            )
    except InvalidInput as exc:
        return _allocation_page(request, who, user, session, allocation_id, 422, exc, text)
    session.commit()
    return RedirectResponse(f"/allocations/{allocation_id}", status_code=303)
