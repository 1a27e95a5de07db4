"""Sign-in with an OpenID Provider ("Sign in with MyAccessID"), beside the email link.

The button posts (with the page's CSRF token) to `/sign-in/with/<provider>`, which records
the sign-in (state, nonce, PKCE verifier, bound to this browser by a cookie) and sends the
browser to the provider. The provider sends it back to `.../callback`, where the state is
spent at once, the code traded for tokens, the ID token validated, and the same portal
session as the email link's is started. Anything wrong: the sign-in page, 401, no session.
"""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from fabbrica.core.errors import Unauthenticated
from fabbrica.portal.signin import _safe_next
from fabbrica.portal.web import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    CsrfChecked,
    DbSession,
    PortalRoute,
    Viewer,
    context,
    render,
    set_cookie,
    templates,
)
from fabbrica.services import federated, portal_sessions
from fabbrica.services.oidc import ProviderUnreachable, RelyingParty

router = APIRouter(route_class=PortalRoute, include_in_schema=False)
BROWSER_COOKIE = "fabbrica_oidc"  # binds a sign-in under way to the browser that began it


def sign_in_providers(request: Request) -> list[dict[str, str]]:
    """The providers the sign-in page offers (its template calls this)."""
    return [
        {"name": party.config.name, "display_name": party.config.display_name}
        for party in context(request).oidc
    ]


templates.globals["sign_in_providers"] = sign_in_providers


def _callback_url(request: Request, party: RelyingParty) -> str:
    base = context(request).public_url or str(request.base_url)
    return f"{base.rstrip('/')}/sign-in/with/{party.config.name}/callback"


def _refused(request: Request, message: str, status: int = 401) -> HTMLResponse:
    who = Viewer(None, None, request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32))
    return render(request, who, "sign_in.html", status, next="/", email="", error=message)


@router.post("/sign-in/with/{name}", dependencies=[CsrfChecked])
def go_to_provider(
    request: Request, session: DbSession, name: str, next: str = "/", mfa: bool = False
) -> Response:
    ctx = context(request)
    party = ctx.oidc.party(name)
    browser = request.cookies.get(BROWSER_COOKIE) or secrets.token_urlsafe(32)
    try:
        url = federated.begin(
            session,
            party,
            redirect_uri=_callback_url(request, party),
            browser=browser,
            next_path=_safe_next(next),
            now=ctx.clock(),
            acr_values=" ".join(party.config.mfa_acr) if mfa else None,
        )
    except ProviderUnreachable as exc:
        session.rollback()
        return _refused(request, exc.message, 502)
    session.commit()
    response = RedirectResponse(url, status_code=303)
    max_age = int(federated.LOGIN_TTL.total_seconds())
    set_cookie(request, response, BROWSER_COOKIE, browser, max_age=max_age)
    return response


@router.get("/sign-in/with/{name}/callback", response_class=HTMLResponse)
def come_back(request: Request, name: str) -> Response:
    ctx = context(request)
    party = ctx.oidc.party(name)
    query: dict[str, Any] = dict(request.query_params)
    try:
        with ctx.db.session() as session:  # the state is spent whatever follows
            pending = federated.take(
                session,
                state=str(query.get("state", "")),
                browser=request.cookies.get(BROWSER_COOKIE, ""),
                now=ctx.clock(),
            )
        if pending.provider != party.config.name:
            raise Unauthenticated("this sign-in was started with another provider (state)")
        if "error" in query:
            said = query.get("error_description") or query["error"]
            raise Unauthenticated(f"{party.config.display_name} did not sign you in: {said}")
        tokens = party.exchange(
            _callback_url(request, party),
            code=str(query.get("code", "")),
            code_verifier=pending.code_verifier,
            nonce=pending.nonce,
            now=ctx.clock().timestamp(),
        )
        with ctx.db.session() as session:
            user = federated.sign_in(session, party, tokens.asserted, ctx.clock())
            started = portal_sessions.start(
                session,
                user,
                user_agent=request.headers.get("user-agent", ""),
                now=ctx.clock(),
                acr=tokens.asserted.acr,
                amr=" ".join(tokens.asserted.amr) or None,
                mfa=federated.multi_factor(party, tokens.asserted),
                provider=party.config.name,
            )
            cookie = started.secret
    except Unauthenticated as exc:
        refused = _refused(request, exc.message)
        refused.delete_cookie(BROWSER_COOKIE, path="/")
        return refused
    response = RedirectResponse(pending.next_path, status_code=303)
    max_age = int(portal_sessions.SESSION_MAX.total_seconds())
    set_cookie(request, response, SESSION_COOKIE, cookie, max_age=max_age)
    response.delete_cookie(BROWSER_COOKIE, path="/")
    return response


def signed_out(request: Request, provider: str | None) -> Response | None:
    """After sign-out from a session an OpenID Provider made: a page offering to sign out
    at the provider too (its end-session endpoint); None otherwise."""
    parties = {party.config.name: party for party in context(request).oidc}
    party = parties.get(provider or "")
    if party is None:
        return None
    base = context(request).public_url or str(request.base_url)
    url = party.end_session_url(base.rstrip("/") + "/")
    if url is None:
        return None
    who = Viewer(None, None, request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32))
    return render(request, who, "signed_out.html", provider=party.config.display_name, url=url)
