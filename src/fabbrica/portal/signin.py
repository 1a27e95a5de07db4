"""Sign-in with a one-time link sent by email, sign-out, and the user's own sessions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from fabbrica.core.errors import InvalidInput, Unauthenticated
from fabbrica.portal.web import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    CsrfChecked,
    DbSession,
    PortalRoute,
    UserDep,
    Viewer,
    ViewerDep,
    context,
    render,
    set_cookie,
)
from fabbrica.services import portal_sessions

router = APIRouter(route_class=PortalRoute, include_in_schema=False)


def _safe_next(target: str) -> str:
    """Only a path of this site (never `//host` or a scheme): no open redirect."""
    if target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return "/"


@router.get("/sign-in", response_class=HTMLResponse)
def sign_in_form(request: Request, who: ViewerDep, next: str = "/") -> Response:
    if who.signed_in:
        return RedirectResponse(_safe_next(next), status_code=303)
    return render(request, who, "sign_in.html", next=_safe_next(next), email="", error=None)


@router.post("/sign-in", response_class=HTMLResponse, dependencies=[CsrfChecked])
def ask_for_link(
    request: Request,
    who: ViewerDep,
    session: DbSession,
    email: Annotated[str, Form(max_length=254)] = "",
) -> HTMLResponse:
    ctx = context(request)
    base = ctx.public_url or str(request.base_url)
    try:
        portal_sessions.send_link(session, email, base_url=base, now=ctx.clock())
    except InvalidInput as exc:
        return render(request, who, "sign_in.html", 422, next="/", email=email, error=exc.message)
    session.commit()
    return render(request, who, "sign_in_sent.html", email=email)


@router.get("/sign-in/{secret}", response_class=HTMLResponse)
def open_link(request: Request, session: DbSession, secret: str) -> Response:
    ctx = context(request)
    try:
        started = portal_sessions.redeem(
            session, secret, user_agent=request.headers.get("user-agent", ""), now=ctx.clock()
        )
    except Unauthenticated as exc:
        session.rollback()
        who = Viewer(None, None, request.cookies.get(CSRF_COOKIE) or "")
        return render(request, who, "sign_in.html", 401, next="/", email="", error=exc.message)
    session.commit()
    response = RedirectResponse("/", status_code=303)
    max_age = int(portal_sessions.SESSION_MAX.total_seconds())
    set_cookie(request, response, SESSION_COOKIE, started.secret, max_age=max_age)
    return response


@router.post("/sign-out", dependencies=[CsrfChecked])
def sign_out(request: Request, who: ViewerDep, session: DbSession) -> Response:
    provider = who.session.provider if who.session is not None else None
    if who.session is not None:
        portal_sessions.end(who.session, now=context(request).clock())
        session.commit()
    from fabbrica.portal.federated import signed_out  # it imports this module

    response = signed_out(request, provider) or RedirectResponse("/", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/account", response_class=HTMLResponse)
def account(request: Request, who: ViewerDep, user: UserDep, session: DbSession) -> Response:
    rows = portal_sessions.live_sessions(session, user, now=context(request).clock())
    return render(request, who, "account.html", sessions=rows)


@router.post("/account/sessions/{session_id}/end", dependencies=[CsrfChecked])
def end_session(request: Request, user: UserDep, session: DbSession, session_id: int) -> Response:
    portal_sessions.revoke(session, user, session_id, now=context(request).clock())
    session.commit()
    return RedirectResponse("/account", status_code=303)
