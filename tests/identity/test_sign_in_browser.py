"""Sign in with an OpenID Provider in a real Chromium (both databases): the portal's
button, the provider's own login and consent pages, back on the portal signed in; after
signing out, a second sign-in (the provider remembers the browser) lands on the same
account; signing out offers to sign out at the provider too, after which it asks again; a
refusal is a page that says why, with no session."""

from __future__ import annotations

from sqlalchemy import select

from fabbrica.store.models import Identity, PortalSession
from tests.browser import browser_page
from tests.identity.conftest import Portal


def test_sign_in_with_the_provider_in_a_browser(portal: Portal) -> None:
    account = portal.account(name="Grace Engineer")
    with browser_page() as browsed:
        page = browsed.page
        page.goto(f"{portal.url}/sign-in?next=/jobs")
        page.click("text=Sign in with Test IdP")
        assert page.url.startswith(portal.idp.issuer)  # the provider's own login page
        page.fill("#login", account.sub)
        page.fill("#password", account.password)
        page.click("#sign-in")
        page.click("#allow")  # the provider's consent page
        page.wait_for_url(f"{portal.url}/jobs")
        assert account.email in page.inner_text("header")
        page.click("text=Sign out")
        assert "Sign in" in page.inner_text("header")
        page.goto(f"{portal.url}/sign-in")
        page.click("text=Sign in with Test IdP")  # the provider remembers: no form this time
        page.wait_for_url(f"{portal.url}/")
        assert account.email in page.inner_text("header")
        page.click("text=Sign out")  # and this time at the provider too
        page.click("text=Sign out of Test IdP too")
        page.click("#logout")
        page.wait_for_url(f"{portal.url}/")
        page.goto(f"{portal.url}/sign-in")
        page.click("text=Sign in with Test IdP")
        assert page.is_visible("#password")  # the provider asks again
        assert browsed.errors == []
    with portal.ctx.db.session() as session:
        users = set(session.scalars(select(PortalSession.user_id)))
        linked = session.scalars(select(Identity.user_id)).all()
    assert len(users) == 1 and linked == list(users)


def test_a_refused_sign_in_says_why_in_the_browser(portal: Portal) -> None:
    account = portal.account(email_verified=False)
    with browser_page() as browsed:
        page = browsed.page
        page.goto(f"{portal.url}/sign-in")
        page.click("text=Sign in with Test IdP")
        page.fill("#login", account.sub)
        page.fill("#password", account.password)
        page.click("#sign-in")
        page.click("#allow")
        page.wait_for_url(f"{portal.url}/sign-in/with/**")
        assert "has not verified your email" in page.inner_text("main")
        assert "Sign in" in page.inner_text("header")
    with portal.ctx.db.session() as session:
        assert session.scalars(select(PortalSession)).first() is None
