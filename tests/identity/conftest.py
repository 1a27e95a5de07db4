"""Fixtures of the federated sign-in tests: a real OpenID Provider (Node, oidc-provider)
for the session, and per test a real HTTP server (uvicorn) serving the app and its portal
on the test's database (both backends), with that provider configured."""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import OAuth2Client

from fabbrica.api.app import create_app
from fabbrica.api.deps import AppContext
from fabbrica.catalog.model import Catalog
from fabbrica.core.federated import ClaimMap, ProviderConfig
from fabbrica.portal import install_portal
from fabbrica.services import identity
from fabbrica.services.access.calls import seed_calls
from fabbrica.services.oidc import Providers, RelyingParty
from fabbrica.store.db import Database
from fabbrica.store.types import utcnow
from tests.cli.server import free_port
from tests.conftest import ADMIN_TOKEN
from tests.oidc_provider import Account, TestProvider, running_provider

PROVIDER = "test-idp"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
API_AUDIENCE = "urn:fabbrica:api"
SDK_SECRET = "sdk-secret-for-tests"
SDK_REDIRECT = "http://127.0.0.1:9/sdk-callback"  # never opened: the test reads the code
START_LIMIT = 30.0  # a bound that catches a hang, not a measure of speed


@pytest.fixture(scope="session")
def idp() -> Iterator[TestProvider]:
    with running_provider() as provider:
        yield provider


@dataclass
class Portal:
    url: str
    ctx: AppContext
    party: RelyingParty
    idp: TestProvider
    sdk_client: str  # a client of the provider that asks for access tokens for the API

    def account(self, **values: Any) -> Account:
        """A new account at the provider (unique subject and address unless given)."""
        key = secrets.token_hex(4)
        values.setdefault("email", f"user-{key}@uni.example")
        return self.idp.add_account(Account(sub=f"sub-{key}", password=f"pw-{key}", **values))


@pytest.fixture
def portal(db: Database, catalog: Catalog, idp: TestProvider) -> Iterator[Portal]:
    port = free_port()
    client_id, client_secret = f"portal-{port}", secrets.token_urlsafe(24)
    url = f"http://127.0.0.1:{port}"
    idp.add_client(
        client_id=client_id,
        client_secret=client_secret,
        redirect_uris=[f"{url}/sign-in/with/{PROVIDER}/callback"],
        post_logout_redirect_uris=[f"{url}/"],
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
    )
    idp.add_client(
        client_id=f"sdk-{port}",
        client_secret=SDK_SECRET,
        redirect_uris=[SDK_REDIRECT],
        grant_types=["authorization_code"],
        response_types=["code"],
    )
    cli_client = f"cli-{port}"
    idp.add_client(
        client_id=cli_client,
        token_endpoint_auth_method="none",
        grant_types=[DEVICE_GRANT, "refresh_token"],
        response_types=[],
        redirect_uris=[],
    )
    config = ProviderConfig(
        name=PROVIDER,
        display_name="Test IdP",
        issuer=idp.issuer,
        client_id=client_id,
        client_secret=client_secret,
        scopes=("openid", "email", "profile", "affiliation"),
        claims=ClaimMap(affiliation="eduperson_scoped_affiliation"),
        cli_client_id=cli_client,
        api_audience=API_AUDIENCE,
    )
    party = RelyingParty(config)
    ctx = AppContext(db=db, catalog=catalog, clock=utcnow, oidc=Providers([party]))
    with db.session() as session:
        identity.bootstrap(session, now=utcnow(), token=ADMIN_TOKEN)
        seed_calls(session, catalog, utcnow())
    app = create_app(ctx)
    install_portal(app)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    began = time.monotonic()
    while not server.started:
        assert thread.is_alive() and time.monotonic() - began < START_LIMIT, "no server"
        time.sleep(0.05)
    yield Portal(url, ctx, party, idp, f"sdk-{port}")
    server.should_exit = True
    thread.join(15)


def form_action(html: str) -> str:
    """The action of the page's (first) POST form."""
    found = re.search(r'<form method="post" action="([^"]+)"', html)
    assert found is not None, html
    return found[1].replace("&amp;", "&")


def http_sign_in(portal: Portal, account: Account, *, mfa: bool = False) -> httpx.Response:
    """Sign in to the portal through the provider with a plain HTTP client (the provider's
    real login and consent forms); the last response (the portal's page or refusal)."""
    with httpx.Client(timeout=20) as client:
        return follow(client, to_callback(client, portal, account, mfa=mfa))


def follow(client: httpx.Client, url: str) -> httpx.Response:
    """GET `url` and follow redirects (the cookies of each host kept by the client)."""
    answer = client.get(url)
    for _ in range(10):
        if not answer.is_redirect:
            return answer
        answer = client.get(answer.next_request.url if answer.next_request else "")
    raise AssertionError(f"too many redirects from {url}")


def to_callback(
    client: httpx.Client, portal: Portal, account: Account, *, mfa: bool = False
) -> str:
    """Start a sign-in at the portal and pass the provider's login and consent pages; the
    callback URL the provider sends the browser back to (not opened)."""
    page = client.get(f"{portal.url}/sign-in")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None, page.text
    start = f"{portal.url}/sign-in/with/{PROVIDER}?next=/" + ("&mfa=true" if mfa else "")
    answer = client.post(start, data={"csrf": csrf[1]})
    callback = f"{portal.url}/sign-in/with/{PROVIDER}/callback"
    return through_provider(client, portal, answer, account, callback)


def through_provider(
    client: httpx.Client, portal: Portal, answer: httpx.Response, account: Account, until: str
) -> str:
    """Follow the provider's pages (its login and consent forms filled in) until it
    redirects to a URL starting with `until`; that URL."""
    for _ in range(12):
        location = answer.headers.get("location", "")
        if location.startswith(until):
            return str(location)
        if answer.is_redirect:
            assert answer.next_request is not None
            answer = client.get(answer.next_request.url)
            continue
        assert answer.status_code == 200, answer.text
        action = portal.idp.issuer + form_action(answer.text)
        data = {}
        if 'id="login"' in answer.text:
            data = {"login": account.sub, "password": account.password, "otp": account.otp or ""}
        answer = client.post(action, data=data)
    raise AssertionError(f"the provider did not send the browser back: {answer.text}")


def api_access_token(portal: Portal, account: Account) -> str:
    """A provider's JWT access token for Fabbrica's API (audience API_AUDIENCE), as a
    script would get one: the code flow of another client, with a resource indicator."""
    meta = httpx.get(f"{portal.idp.issuer}/.well-known/openid-configuration").json()
    verifier = generate_token(48)
    with (
        OAuth2Client(
            client_id=portal.sdk_client,
            client_secret=SDK_SECRET,
            scope="openid api",
            redirect_uri=SDK_REDIRECT,
            code_challenge_method="S256",
        ) as oauth,
        httpx.Client(timeout=20) as browser,
    ):
        url, _ = oauth.create_authorization_url(
            meta["authorization_endpoint"], code_verifier=verifier, resource=API_AUDIENCE
        )
        back = through_provider(browser, portal, browser.get(url), account, SDK_REDIRECT)
        token = oauth.fetch_token(
            meta["token_endpoint"],
            authorization_response=back,
            code_verifier=verifier,
            resource=API_AUDIENCE,
        )
    return str(token["access_token"])
