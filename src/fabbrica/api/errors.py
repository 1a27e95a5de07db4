"""One JSON error shape for every failure: {"error": {"code", "message", "field"}}."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route

from fabbrica.core.errors import FabbricaError

log = logging.getLogger("fabbrica.api")

# The `code` of each HTTP status the API answers with. docs/api.md lists these codes (a test
# checks both ways), and the OpenAPI document's error schema enumerates them.
STATUS_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    422: "invalid",
    503: "unavailable",
}
OTHER_CODE = "error"  # any status missing above (none is sent today)
RETRY_AFTER_S = 5  # what a 503 tells clients to wait before they try again


def error_response(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    sent = dict(headers or {})
    if status == 401:
        sent.setdefault("WWW-Authenticate", "Bearer")
    body = {"error": {"code": code, "message": message, "field": field}}
    return JSONResponse(body, status_code=status, headers=sent or None)


def _field(loc: Sequence[Any]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


async def _on_domain(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, FabbricaError)
    return error_response(exc.status, exc.code, exc.message, exc.field)


async def _on_validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    field = _field(first.get("loc", ()))
    message = str(first.get("msg", "invalid request"))
    if first.get("type") == "extra_forbidden":
        message = "unknown field"
    if first.get("type") == "json_invalid":  # its loc holds a character position
        field, message = None, f"the body is not valid JSON ({message})"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem(s))"
    return error_response(422, "invalid", f"{field}: {message}" if field else message, field)


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = STATUS_CODES.get(exc.status_code, OTHER_CODE)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = _allowed(request)
    return error_response(exc.status_code, code, str(exc.detail), headers=headers)


def _allowed(request: Request) -> str:
    """Every method the request's path takes: those its operations in the OpenAPI document
    name, and those of the app's own routes (the document itself, /docs). (Starlette's own
    `Allow` names only the first route matching the path, while GET /jobs and POST /jobs
    are two routes.)"""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.methods:
            match, _ = route.matches(request.scope)
            if match is not Match.NONE:
                methods |= route.methods
    path = request.url.path
    for template, operations in request.app.openapi().get("paths", {}).items():
        if re.fullmatch(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)), path):
            methods |= {method.upper() for method in operations}
    return ", ".join(sorted(methods))


async def _on_database_away(_: Request, exc: Exception) -> JSONResponse:
    """The database cannot be reached (down, restarting, failing over, the network): 503,
    never 500; the request changed nothing (its transaction did not commit). The pool
    checks a connection idle for a second or more before use, and drops them all after a
    connection fails (store/db.py), so service resumes by itself."""
    log.warning("database unavailable: %s", " ".join(str(exc).split())[:300])
    return error_response(
        503,
        "unavailable",
        "the database is unavailable; nothing was changed, try again shortly",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def install_error_handlers(app: FastAPI) -> None:
    for away in (OperationalError, InterfaceError, PoolTimeout):
        app.add_exception_handler(away, _on_database_away)
    app.add_exception_handler(FabbricaError, _on_domain)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
