"""The transport under `Client`: one httpx client for /api/v1, errors as exceptions."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

import httpx

from fabbrica.client._config import DEFAULT_TIMEOUT, resolve_target
from fabbrica.client._errors import ApiError, ConnectError, NoTokenError

__all__ = ["DEFAULT_TIMEOUT", "IDEMPOTENT", "Http"]

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


class Http:
    """Base of `Client`: the connection, the token and raw requests."""

    def __init__(
        self, url: str | None = None, token: str | None = None, *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        target = resolve_target(url, token)
        self.url: str = target.url
        self.token: str | None = target.token
        headers = {"Authorization": f"Bearer {target.token}"} if target.token else {}
        self._http = httpx.Client(base_url=f"{target.url}/api/v1", headers=headers, timeout=timeout)

    # --- lifetime --------------------------------------------------------------------

    def close(self) -> None:
        """Close the connections; the client cannot be used afterwards."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:  # never the token itself: notebooks show reprs
        return f"Client(url={self.url!r}, token={'set' if self.token else None})"

    # --- requests --------------------------------------------------------------------

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The response as it is, whatever its status (ConnectError when none came)."""
        if not self.token and path != "/health":
            raise NoTokenError(
                "no API token: pass token=, set FABBRICA_TOKEN or run `fabbrica login`"
            )
        try:
            try:
                return self._http.request(method, path, **kwargs)
            except (httpx.RemoteProtocolError, httpx.ReadError):
                # a kept-alive connection the server closed as we sent on it: a request
                # that changes nothing, or changes it the same way again, is sent once more
                if method not in IDEMPOTENT:
                    raise
                return self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ConnectError(self.url, str(exc) or type(exc).__name__) from exc

    def _ok(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._send(method, path, **kwargs)
        if not response.is_success:
            raise ApiError.from_response(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._ok(method, path, **kwargs).json()

    def _get(self, path: str, **params: Any) -> Any:
        """GET with query parameters; None values are left out."""
        clean = {k: v for k, v in params.items() if v is not None}
        return self._json("GET", path, params=clean)

    def _post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """POST a JSON body; None values are left out (the API's default applies)."""
        return self._json("POST", path, json=_clean(body or {}))

    def _put(self, path: str, body: dict[str, Any]) -> Any:
        return self._json("PUT", path, json=_clean(body))

    def _patch(self, path: str, body: dict[str, Any]) -> Any:
        return self._json("PATCH", path, json=_clean(body))

    def _delete(self, path: str) -> Any:
        return self._json("DELETE", path)


def _clean(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if v is not None}
