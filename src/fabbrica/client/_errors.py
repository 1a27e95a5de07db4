"""The exceptions of the SDK: one base class, `ClientError`, to catch them all."""

from __future__ import annotations

from typing import Any, Protocol

__all__ = [
    "ApiError",
    "ClientError",
    "ConfigError",
    "ConnectError",
    "JobSpecError",
    "NoTokenError",
    "OutputsError",
]


class Answer(Protocol):
    """What `ApiError.from_response` reads of a response: an `httpx.Response`, or the CLI's
    quick `fabbrica run`'s (the standard library's `http.client`)."""

    @property
    def status_code(self) -> int: ...
    @property
    def text(self) -> str: ...
    @property
    def reason_phrase(self) -> str: ...
    def json(self) -> Any: ...


class ClientError(Exception):
    """Base of every error the SDK raises; `message` is the text to show a person."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ApiError(ClientError):
    """The API answered with an error (HTTP 4xx or 5xx).

    `status` is the HTTP status, `code` the API's error code (`invalid`, `not_found`,
    `forbidden`, ...; see docs/api.md), `field` the dotted name of the input at fault
    (`spec.resources.gpus`, `gpu_hours`) or None, and `message` the API's sentence.
    `str(error)` reads `field: message (HTTP status)`.
    """

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.field = field

    def __str__(self) -> str:
        text = self.message
        if self.field and not text.startswith(f"{self.field}:"):
            text = f"{self.field}: {text}"
        return f"{text} (HTTP {self.status})"

    @classmethod
    def from_response(cls, response: Answer) -> ApiError:
        """The error a failed response carries, in the API's `{"error": {...}}` shape, or
        its text when it has another shape (a proxy's page, say)."""
        try:
            error = response.json()["error"]
            message = str(error["message"])
            code = str(error.get("code") or "error")
            field = error.get("field")
        except (ValueError, KeyError, TypeError, AttributeError):
            message = response.text[:500] or response.reason_phrase
            code, field = "error", None
        return cls(response.status_code, code, message, str(field) if field else None)


class ConnectError(ClientError):
    """The API could not be reached: connection refused, name not found, timeout, or the
    connection broke. `url` is the server's base URL."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach Fabbrica at {url} ({reason})")
        self.url = url
        self.reason = reason


class ConfigError(ClientError):
    """The config file (see `config_path()`) cannot be read or does not hold an object."""


class NoTokenError(ConfigError):
    """No API token: none passed, no FABBRICA_TOKEN, nothing saved by `fabbrica login`."""


class JobSpecError(ClientError):
    """A job spec refused before anything was sent: unreadable, invalid (then `field` names
    the first problem, as `resources.gpus`), or its workdir is not a folder (`workdir`)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class OutputsError(ClientError):
    """A job's outputs were not unpacked: the archive is broken, cannot be written, or an
    entry (`member`) would land outside the folder (an absolute or escaping path or link, a
    device, a FIFO). Nothing is written then: `download` is all or nothing."""

    def __init__(self, message: str, member: str | None = None) -> None:
        super().__init__(message)
        self.member = member
