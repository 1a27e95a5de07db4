"""The one request of the quick `fabbrica run` (fabbrica.cli.quick_run), with the standard
library's `http.client`: as the SDK sends it with httpx (the same timeout, the same
certificate authorities), and its failures as the SDK's errors."""

from __future__ import annotations

import http.client
import json
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fabbrica.client._errors import ApiError, ConnectError


class Refused(Exception):
    """The server answered with an error (`error`), or the connection broke once the
    request was on its way (`connect_error`): it may have been received, so it is not sent
    again."""

    def __init__(self, error: ApiError | None, connect_error: ConnectError | None = None):
        super().__init__(error or connect_error)
        self.error = error
        self.connect_error = connect_error


@dataclass(frozen=True)
class Answer:
    """An error response as `ApiError.from_response` reads it (httpx's names and ways)."""

    status_code: int
    content: bytes
    content_type: str

    @property
    def text(self) -> str:
        charset = "utf-8"
        for parameter in self.content_type.split(";")[1:]:
            name, _, value = parameter.strip().partition("=")
            if name.lower() == "charset" and value:
                charset = value.strip('"')
        try:
            return self.content.decode(charset, errors="replace")
        except LookupError:
            return self.content.decode("utf-8", errors="replace")

    @property
    def reason_phrase(self) -> str:
        try:
            return http.HTTPStatus(self.status_code).phrase
        except ValueError:
            return ""

    def json(self) -> Any:
        return json.loads(self.content)


def post(
    url: str, path: str, token: str, request: tuple[str, bytes], *, timeout: float
) -> dict[str, Any] | None:
    """POST `request` (content type, body) to `url` + `path` and return the JSON answer;
    None when there is no connection (nothing was sent), or an address it does not handle
    (the SDK then says what it makes of it). Raises Refused."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        return None
    if parts.username is not None or parts.fragment:  # httpx's ways with these: its own
        return None
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        try:
            context = _tls()
        except (OSError, ValueError):  # a certificate file it cannot read: the SDK says so
            return None
        connection = http.client.HTTPSConnection(
            parts.hostname, port, timeout=timeout, context=context
        )
    else:
        connection = http.client.HTTPConnection(parts.hostname, port, timeout=timeout)
    content_type, body = request
    try:
        try:
            connection.connect()
        except OSError:  # refused, no such host, a certificate refused: the SDK says why
            return None
        try:
            connection.request(
                "POST",
                parts.path.rstrip("/") + path,
                body=body,
                headers={
                    "Authorization": f"Bearer {token}",
                    "Content-Type": content_type,
                    "Accept": "*/*",
                    "User-Agent": "fabbrica-cli",
                },
            )
            response = connection.getresponse()
            content = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise Refused(None, ConnectError(url, _reason(exc))) from exc
    finally:
        connection.close()
    if 200 <= response.status < 300:
        job: dict[str, Any] = json.loads(content)
        return job
    answer = Answer(response.status, content, response.getheader("Content-Type") or "")
    raise Refused(ApiError.from_response(answer))


def _tls() -> Any:
    """httpx's default context: SSL_CERT_FILE, else SSL_CERT_DIR, else certifi's bundle."""
    import ssl

    if os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    if os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


def _reason(exc: Exception) -> str:
    """The reason httpx gives for the same failure."""
    if isinstance(exc, http.client.RemoteDisconnected):
        return "Server disconnected without sending a response."
    return str(exc) or type(exc).__name__
