"""A member's notices: the budget alerts of their projects' allocations (GPU-hours used past
75, 90 and 100 %, 14 and 3 days left), from the same service as `GET /api/v1/notices`."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from fabbrica.portal.web import DbSession, PortalRoute, UserDep, ViewerDep, render
from fabbrica.services import alerts

router = APIRouter(route_class=PortalRoute, include_in_schema=False)
SHOWN = 100  # the newest notices on the page


@router.get("/notices", response_class=HTMLResponse)
def notices_page(request: Request, who: ViewerDep, user: UserDep, session: DbSession) -> Response:
    return render(request, who, "notices.html", notices=alerts.notices(session, user, limit=SHOWN))
