"""`fabbrica login` through the server's OpenID Provider, like `gh auth login`: the OAuth
2.0 device authorization grant (RFC 8628) with Authlib. The CLI prints a URL and a code,
the person signs in on any browser, the CLI receives an ID token and trades it at the
server (`POST /api/v1/auth/device`) for a Fabbrica API token, which `login` saves."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from fabbrica.cli.errors import BAD_INPUT, CliError
from fabbrica.client import ApiError

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
TIMEOUT = 15.0


def providers(url: str) -> list[dict[str, Any]]:
    """The providers the server offers to the CLI ([] from a server without any)."""
    try:
        response = httpx.get(f"{url}/api/v1/auth/providers", timeout=TIMEOUT)
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach {url}: {exc}") from exc
    if response.status_code == 404:
        return []  # a server older than federated sign-in
    if not response.is_success:
        raise CliError(f"{url} answered {response.status_code}: {response.text[:200]}")
    found: list[dict[str, Any]] = response.json()
    return found


def choose(found: list[dict[str, Any]], name: str | None) -> dict[str, Any]:
    if name is None:
        return found[0]
    for provider in found:
        if provider["name"] == name:
            return provider
    names = ", ".join(p["name"] for p in found) or "none"
    raise CliError(f"the server has no identity provider {name!r} (it has: {names})", BAD_INPUT)


def _metadata(issuer: str) -> dict[str, Any]:
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    response = httpx.get(url, timeout=TIMEOUT)
    response.raise_for_status()
    data: dict[str, Any] = response.json()
    if data.get("issuer") != issuer or "device_authorization_endpoint" not in data:
        raise CliError(f"{issuer} does not offer the device grant")
    return data


def sign_in(
    url: str, provider: dict[str, Any], tell: Callable[[str], None], *, mfa: bool = False
) -> dict[str, Any]:
    """Run the device grant with `provider` (asking for multi-factor authentication with
    `mfa`: its `acr_values`) and trade its ID token at `url`: the server's answer (the new
    API token, its id and hint)."""
    client_id = str(provider["cli_client_id"])
    try:
        meta = _metadata(str(provider["issuer"]))
        asked = httpx.post(
            str(meta["device_authorization_endpoint"]),
            data={
                "client_id": client_id,
                "scope": " ".join(provider["scopes"]),
                **({"acr_values": " ".join(provider.get("mfa_acr", []))} if mfa else {}),
            },
            timeout=TIMEOUT,
        )
        asked.raise_for_status()
    except httpx.HTTPError as exc:
        raise CliError(f"{provider['display_name']} did not start a sign-in: {exc}") from exc
    grant: dict[str, Any] = asked.json()
    tell(
        f"Open {grant['verification_uri']} and enter the code {grant['user_code']}\n"
        f"(or open {grant.get('verification_uri_complete', grant['verification_uri'])})"
    )
    tokens = _wait_for_tokens(meta, client_id, grant, provider["display_name"])
    try:
        answer = httpx.post(
            f"{url}/api/v1/auth/device",
            json={"provider": provider["name"], **tokens},
            timeout=TIMEOUT,
        )
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach {url}: {exc}") from exc
    if not answer.is_success:
        refused = ApiError.from_response(answer)
        raise CliError(f"Fabbrica refused the sign-in: {refused.message}")
    token: dict[str, Any] = answer.json()
    return token


def _wait_for_tokens(
    meta: dict[str, Any], client_id: str, grant: dict[str, Any], name: str
) -> dict[str, str]:
    interval = float(grant.get("interval", 5))
    deadline = time.monotonic() + float(grant.get("expires_in", 600))
    # Authlib (and the JOSE library under it) costs most of a second to import: only
    # `fabbrica login` pays it, not every command.
    from authlib.common.errors import AuthlibBaseError
    from authlib.integrations.httpx_client import OAuth2Client

    public = "none"  # a public client: no secret
    with OAuth2Client(client_id=client_id, token_endpoint_auth_method=public) as oauth:
        while time.monotonic() < deadline:
            time.sleep(interval)
            try:
                token = oauth.fetch_token(
                    str(meta["token_endpoint"]),
                    grant_type=DEVICE_GRANT,
                    device_code=grant["device_code"],
                )
            except AuthlibBaseError as exc:
                if exc.error == "authorization_pending":
                    continue
                if exc.error == "slow_down":
                    interval += 5
                    continue
                said = exc.description or exc.error
                raise CliError(f"{name} did not sign you in: {said}") from exc
            except httpx.HTTPError as exc:
                raise CliError(f"{name} did not answer: {exc}") from exc
            id_token, access_token = token.get("id_token"), token.get("access_token")
            if not isinstance(id_token, str) or not isinstance(access_token, str):
                raise CliError(f"{name} sent no ID token (is `openid` among the scopes?)")
            return {"id_token": id_token, "access_token": access_token}
    raise CliError(f"the code expired before the sign-in at {name} was done: run login again")
