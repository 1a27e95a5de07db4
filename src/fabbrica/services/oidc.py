"""The OpenID Connect relying party: discovery, the authorization code flow with PKCE,
and ID tokens validated against the provider's keys (Authlib and joserfc; no
hand-written JWT or OAuth code).

One `RelyingParty` per configured provider keeps the discovery document and the JWKS in
memory: the JWKS is fetched again when it is an hour old, and at once when a token names a
key id it does not hold (the provider rotated its key), at most `REFETCH_PER_MINUTE` times
a minute and once per unknown key id within `UNKNOWN_KID_PAUSE`.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
from authlib.common.errors import AuthlibBaseError
from authlib.integrations.httpx_client import OAuth2Client
from joserfc import jws, jwt
from joserfc.errors import ExpiredTokenError, JoseError
from joserfc.jwk import KeySet

from fabbrica.core.errors import NotFound, Unauthenticated
from fabbrica.core.federated import Asserted, ProviderConfig, assert_claims

CACHE_SECONDS = 3600.0  # discovery document and JWKS
UNKNOWN_KID_PAUSE = 300.0
REFETCH_PER_MINUTE = 10
LEEWAY_SECONDS = 60  # clock skew allowed on exp / iat / nbf
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
HTTP_TIMEOUT = 10.0


class ProviderUnreachable(Unauthenticated):
    """The provider did not answer, or not as an OpenID Provider should."""


@dataclass(frozen=True)
class TokenSet:
    """What the token endpoint answered, the ID token validated."""

    claims: dict[str, Any]  # the ID token's, merged with userinfo's
    access_token: str
    asserted: Asserted


class RelyingParty:
    """Fabbrica as a client of one OpenID Provider."""

    def __init__(
        self,
        config: ProviderConfig,
        *,
        transport: httpx.BaseTransport | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._transport = transport
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = 0.0
        self._jwks: dict[str, Any] | None = None
        self._jwks_at = 0.0
        self._refetches: deque[float] = deque()
        self._unknown_kids: dict[str, float] = {}

    # -- HTTP ------------------------------------------------------------------------

    def _http(self) -> httpx.Client:
        return httpx.Client(transport=self._transport, timeout=HTTP_TIMEOUT)

    def _get_json(self, url: str, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
        try:
            with self._http() as http:
                response = http.get(url, headers=headers)
            response.raise_for_status()
            data = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise ProviderUnreachable(f"{self.config.display_name} did not answer: {exc}") from exc
        if not isinstance(data, dict):
            raise ProviderUnreachable(f"{self.config.display_name} sent no JSON object")
        return data

    def metadata(self) -> dict[str, Any]:
        """The provider's discovery document (checked: its issuer is the configured one)."""
        with self._lock:
            fresh = self._monotonic() - self._metadata_at < CACHE_SECONDS
            if self._metadata is not None and fresh:
                return self._metadata
        url = self.config.issuer.rstrip("/") + "/.well-known/openid-configuration"
        data = self._get_json(url)
        if data.get("issuer") != self.config.issuer:
            raise ProviderUnreachable(
                f"{url} names issuer {data.get('issuer')!r}, not {self.config.issuer!r}"
            )
        with self._lock:
            self._metadata, self._metadata_at = data, self._monotonic()
        return data

    def _client(self, redirect_uri: str | None = None) -> OAuth2Client:
        secret = self.config.client_secret or None
        return OAuth2Client(
            client_id=self.config.client_id,
            client_secret=secret,
            scope=" ".join(self.config.scopes),
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            token_endpoint_auth_method="client_secret_basic" if secret else "none",
            transport=self._transport,
            timeout=HTTP_TIMEOUT,
        )

    # -- the authorization code flow ---------------------------------------------------

    def authorization_url(
        self,
        redirect_uri: str,
        *,
        state: str,
        nonce: str,
        code_verifier: str,
        acr_values: str | None = None,
    ) -> str:
        endpoint = str(self.metadata()["authorization_endpoint"])
        extra = {"acr_values": acr_values, "prompt": "login"} if acr_values else {}
        with self._client(redirect_uri) as client:
            url, _ = client.create_authorization_url(
                endpoint, state=state, nonce=nonce, code_verifier=code_verifier, **extra
            )
        return str(url)

    def exchange(
        self, redirect_uri: str, *, code: str, code_verifier: str, nonce: str, now: float
    ) -> TokenSet:
        """Trade the code for tokens, validate the ID token, and read userinfo."""
        meta = self.metadata()
        try:
            with self._client(redirect_uri) as client:
                token = client.fetch_token(
                    str(meta["token_endpoint"]),
                    grant_type="authorization_code",
                    code=code,
                    code_verifier=code_verifier,
                )
        except (AuthlibBaseError, httpx.HTTPError) as exc:
            raise Unauthenticated(f"{self.config.display_name} refused the sign-in: {exc}") from exc
        id_token = token.get("id_token")
        access_token = token.get("access_token")
        if not isinstance(id_token, str) or not isinstance(access_token, str):
            raise Unauthenticated(f"{self.config.display_name} sent no ID token")
        claims = self.with_userinfo(
            self.validate_id_token(id_token, nonce=nonce, now=now), access_token
        )
        return TokenSet(claims, access_token, assert_claims(self.config, claims))

    def with_userinfo(self, claims: dict[str, Any], access_token: str) -> dict[str, Any]:
        """Validated ID token claims, with the userinfo endpoint's merged in (when it speaks
        of the same subject; the ID token's win)."""
        endpoint = self.metadata().get("userinfo_endpoint")
        if not endpoint:
            return claims
        info = self._get_json(str(endpoint), {"Authorization": f"Bearer {access_token}"})
        if info.get("sub") != claims["sub"]:
            raise Unauthenticated("userinfo speaks of another subject than the ID token")
        return {**info, **claims}

    def end_session_url(self, after: str) -> str | None:
        """Where to send a browser to sign out at the provider too (RP-initiated logout),
        back to `after` (a URL registered with the provider); None when it has no such
        endpoint or does not answer."""
        try:
            endpoint = self.metadata().get("end_session_endpoint")
        except ProviderUnreachable:
            return None
        if not endpoint:
            return None
        query = urlencode({"client_id": self.config.client_id, "post_logout_redirect_uri": after})
        return f"{endpoint}{'&' if '?' in str(endpoint) else '?'}{query}"

    # -- ID tokens -------------------------------------------------------------------

    def validate_id_token(
        self, id_token: str, *, nonce: str | None, now: float, audience: str | None = None
    ) -> dict[str, Any]:
        """The ID token's claims, once its signature (JWKS), issuer, audience (the portal's
        client id unless `audience`), expiry and nonce are right; Unauthenticated otherwise,
        saying which."""
        name = self.config.display_name
        client_id = audience or self.config.client_id
        try:
            kid = _kid(id_token)
            decoded = jwt.decode(id_token, self._keys_for(kid), algorithms=list(ALGORITHMS))
            claims = dict(decoded.claims)
            registry = jwt.JWTClaimsRegistry(
                now=int(now),
                leeway=LEEWAY_SECONDS,
                sub={"essential": True},
                exp={"essential": True},
                iat={"essential": True},
            )
            registry.validate(claims)
        except ExpiredTokenError as exc:
            raise Unauthenticated(f"the ID token from {name} has expired") from exc
        except (JoseError, ValueError) as exc:
            raise Unauthenticated(f"the ID token from {name} is not valid: {exc}") from exc
        if claims.get("iss") != self.config.issuer:
            raise Unauthenticated(f"the ID token was not issued by {name} (iss)")
        audience = claims.get("aud")
        audiences = [audience] if isinstance(audience, str) else list(audience or [])
        if client_id not in audiences:
            raise Unauthenticated(f"the ID token from {name} is meant for another client (aud)")
        if len(audiences) > 1 and claims.get("azp") != client_id:
            raise Unauthenticated(f"the ID token from {name} has another authorized party")
        if nonce is not None and claims.get("nonce") != nonce:
            raise Unauthenticated(f"the ID token from {name} answers another sign-in (nonce)")
        return claims

    def validate_access_token(self, token: str, *, now: float) -> dict[str, Any]:
        """A JWT access token's claims (RFC 9068), once its signature (JWKS), issuer,
        audience (the provider's `api_audience`) and expiry are right."""
        name, audience = self.config.display_name, self.config.api_audience
        if audience is None:
            raise Unauthenticated(f"Fabbrica takes no access tokens from {name}")
        try:
            decoded = jwt.decode(token, self._keys_for(_kid(token)), algorithms=list(ALGORITHMS))
            claims = dict(decoded.claims)
            jwt.JWTClaimsRegistry(
                now=int(now),
                leeway=LEEWAY_SECONDS,
                sub={"essential": True},
                exp={"essential": True},
            ).validate(claims)
        except ExpiredTokenError as exc:
            raise Unauthenticated(f"the access token from {name} has expired") from exc
        except (JoseError, ValueError) as exc:
            raise Unauthenticated(f"the access token from {name} is not valid: {exc}") from exc
        audiences = claims.get("aud")
        if claims.get("iss") != self.config.issuer or audience not in (
            [audiences] if isinstance(audiences, str) else list(audiences or [])
        ):
            raise Unauthenticated(f"the access token from {name} is not meant for Fabbrica")
        return claims

    def _keys_for(self, kid: str | None) -> KeySet:
        jwks = self._jwks_cached()
        if kid is not None and kid not in _kids(jwks) and self._may_refetch(kid):
            jwks = self._fetch_jwks()
        return KeySet.import_key_set(jwks)  # type: ignore[arg-type]

    def _jwks_cached(self) -> dict[str, Any]:
        with self._lock:
            if self._jwks is not None and self._monotonic() - self._jwks_at < CACHE_SECONDS:
                return self._jwks
        return self._fetch_jwks()

    def _fetch_jwks(self) -> dict[str, Any]:
        data = self._get_json(str(self.metadata()["jwks_uri"]))
        if not isinstance(data.get("keys"), list):
            raise ProviderUnreachable(f"{self.config.display_name}'s JWKS holds no keys")
        usable = [key for key in data["keys"] if key.get("use", "sig") == "sig"]
        data = {"keys": usable}
        with self._lock:
            self._jwks, self._jwks_at = data, self._monotonic()
        return data

    def _may_refetch(self, kid: str) -> bool:
        now = self._monotonic()
        with self._lock:
            while self._refetches and now - self._refetches[0] > 60:
                self._refetches.popleft()
            tried = self._unknown_kids.get(kid)
            if tried is not None and now - tried < UNKNOWN_KID_PAUSE:
                return False
            if len(self._refetches) >= REFETCH_PER_MINUTE:
                return False
            self._refetches.append(now)
            self._unknown_kids[kid] = now
            if len(self._unknown_kids) > 1000:
                self._unknown_kids.clear()
            return True


def _kid(token: str) -> str | None:
    kid = jws.extract_compact(token.encode()).protected.get("kid")
    return kid if isinstance(kid, str) else None


def _kids(jwks: Mapping[str, Any]) -> set[str]:
    return {str(key.get("kid")) for key in jwks.get("keys", []) if key.get("kid")}


def unverified_issuer(token: str) -> str | None:
    """The `iss` a JWT claims, before any check: only to choose whose keys check it."""
    try:
        payload = json.loads(jws.extract_compact(token.encode()).payload)
    except (JoseError, ValueError):
        return None
    issuer = payload.get("iss") if isinstance(payload, dict) else None
    return issuer if isinstance(issuer, str) else None


class Providers:
    """The providers this Fabbrica trusts, by name (none: federated sign-in is off)."""

    def __init__(self, parties: list[RelyingParty] | None = None) -> None:
        self._parties = {party.config.name: party for party in parties or []}

    @classmethod
    def from_configs(cls, configs: list[ProviderConfig]) -> Providers:
        return cls([RelyingParty(config) for config in configs])

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._parties.values())

    def __bool__(self) -> bool:
        return bool(self._parties)

    def by_issuer(self, issuer: str | None) -> RelyingParty | None:
        """The provider with this issuer that gives access tokens for the API, if any."""
        for party in self._parties.values():
            if party.config.issuer == issuer and party.config.api_audience is not None:
                return party
        return None

    def party(self, name: str) -> RelyingParty:
        party = self._parties.get(name)
        if party is None:
            raise NotFound(f"no identity provider {name!r}", field="provider")
        return party
