"""Domain errors. Services raise them; the API and CLI turn them into 4xx and exit codes."""

from __future__ import annotations


class FabbricaError(Exception):
    """Base of every error a user can act on."""

    code = "error"
    status = 400

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidInput(FabbricaError):
    code = "invalid"
    status = 422


class TooLarge(FabbricaError):
    """Over a size budget (a request, an archive's unpacked size or entries)."""

    code = "too_large"
    status = 413


class NotFound(FabbricaError):
    code = "not_found"
    status = 404


class Conflict(FabbricaError):
    code = "conflict"
    status = 409


class Unauthenticated(FabbricaError):
    code = "unauthenticated"
    status = 401


class Forbidden(FabbricaError):
    code = "forbidden"
    status = 403


class Unavailable(FabbricaError):
    """Not there yet, try again shortly (a notebook still starting)."""

    code = "unavailable"
    status = 503
