"""What every page shares: templates, the signed-in viewer, CSRF, and errors as pages.

Pages call services with a database session, like the API's routes, never the API over
HTTP. A domain error raised by a service becomes a page: 404 for what is missing or not
the viewer's (never a hint that it exists), a redirect to sign-in for a page that needs a
session, 422 for bad input that a form did not handle itself.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy.orm import Session

from fabbrica import __version__
from fabbrica.api.deps import AppContext
from fabbrica.core.errors import FabbricaError, Forbidden, NotFound, Unauthenticated
from fabbrica.portal import i18n
from fabbrica.portal.i18n import _
from fabbrica.services import identity, portal_sessions
from fabbrica.store.models import PortalSession, User

SESSION_COOKIE = "fabbrica_session"
CSRF_COOKIE = "fabbrica_csrf"  # before sign-in: a double-submit token for the sign-in form
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"

templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
    extensions=["jinja2.ext.i18n"],
)
templates.install_gettext_translations(i18n.RequestTranslations(), newstyle=True)  # type: ignore[attr-defined]
templates.filters.update(i18n.FILTERS)
LANGUAGE_COOKIE_SECONDS = 365 * 24 * 3600


class NeedsSignIn(Exception):
    """A page that needs a session was asked for without one."""


class StaleForm(Exception):
    """A state-changing request without the page's CSRF token: refused, nothing done."""


class PortalRoute(APIRoute):
    """Routes whose domain errors are rendered as pages instead of the API's JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except (NeedsSignIn, Unauthenticated):
                target = quote(request.url.path, safe="/")
                return RedirectResponse(f"/sign-in?next={target}", status_code=303)
            except StaleForm:
                message = _(
                    "This form is out of date or was not sent from Fabbrica: reload the page."
                )
                return error_page(request, 403, _("Refused"), message)
            except (NotFound, Forbidden):
                return error_page(request, 404, _("Not found"), _("There is nothing for you here."))
            except FabbricaError as exc:
                return error_page(request, exc.status, _("That did not work"), exc.message)

        return handle


def context(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


def db_session(request: Request) -> Iterator[Session]:
    with context(request).db.session() as session:
        yield session


DbSession = Annotated[Session, Depends(db_session, scope="function")]  # as api.deps.SessionDep


@dataclass
class Viewer:
    """Who looks at the page: a user with a live session, or nobody."""

    user: User | None
    session: PortalSession | None
    csrf: str  # the token every form of the page carries

    @property
    def signed_in(self) -> bool:
        return self.user is not None


def viewer(request: Request, session: DbSession) -> Viewer:
    secret = request.cookies.get(SESSION_COOKIE)
    if secret:
        row = portal_sessions.current(session, secret, now=context(request).clock())
        if row is not None:  # its last use is committed with the request's transaction
            row.user.signed_in_with_mfa = row.mfa
            identity.apply_mfa_policy(row.user, context(request).catalog.mfa_factories())
            return Viewer(row.user, row, row.csrf_token)
    return Viewer(None, None, request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32))


ViewerDep = Annotated[Viewer, Depends(viewer)]


def signed_in(who: ViewerDep) -> User:
    if who.user is None:
        raise NeedsSignIn
    return who.user


UserDep = Annotated[User, Depends(signed_in)]


async def check_csrf(request: Request, who: ViewerDep) -> None:
    """Every state-changing request carries the page's token, in the form or a header."""
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    expected = who.csrf if who.signed_in else request.cookies.get(CSRF_COOKIE)
    if not sent or not expected or not secrets.compare_digest(sent, expected):
        raise StaleForm


CsrfChecked = Depends(check_csrf)


def render(
    request: Request, who: Viewer, template: str, status: int = 200, **values: Any
) -> HTMLResponse:
    html = templates.get_template(template).render(
        request=request,
        viewer=who,
        version=__version__,
        csrf_field=CSRF_FIELD,
        lang=i18n.language(),
        languages=i18n.LANGUAGES,
        **values,
    )
    response = HTMLResponse(html, status_code=status)
    chosen = request.query_params.get(i18n.LANG_PARAM)
    if chosen in i18n.LANGUAGES and request.cookies.get(i18n.LANG_COOKIE) != chosen:
        set_cookie(request, response, i18n.LANG_COOKIE, chosen, max_age=LANGUAGE_COOKIE_SECONDS)
    if not who.signed_in and request.cookies.get(CSRF_COOKIE) != who.csrf:
        set_cookie(request, response, CSRF_COOKIE, who.csrf, max_age=None)
    return response


def error_page(request: Request, status: int, title: str, message: str) -> HTMLResponse:
    who = Viewer(None, None, request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32))
    return render(request, who, "error.html", status, title=title, message=message)


def set_cookie(
    request: Request, response: Response, name: str, value: str, *, max_age: int | None
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )


def is_htmx(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true"
