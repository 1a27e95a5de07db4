"""Request guards applied before any route runs.

- Bodies over a size limit get 413 (a declared Content-Length at once, a streamed body as
  soon as it passes the limit).
- NUL characters in the query or a JSON body get 422: PostgreSQL cannot store
  them, and no name, id or text needs one.
- JSON bodies nested deeper than MAX_JSON_DEPTH get 422 before any parser sees them
  (found by a scan of the brackets, no object built; long bodies scanned in a worker
  thread, off the event loop).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl

import anyio
from anyio import to_thread
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_JSON_DEPTH = 32
_INLINE_SCAN = 64 * 1024  # bodies up to this size are scanned on the loop (microseconds)
_TOKENS = re.compile(rb'\\.|"|[\[\]{}]', re.DOTALL)


class RequestLimits:
    def __init__(
        self,
        app: ASGIApp,
        limit: int,
        upload_limit: int | None = None,
        upload_paths: frozenset[str] = frozenset(),
        upload_prefixes: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.limit = limit
        self.upload_limit = upload_limit or limit
        self.upload_paths = upload_paths
        self.upload_prefixes = upload_prefixes  # paths under these take uploads too

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path") or ""
        upload = path in self.upload_paths or path.startswith(self.upload_prefixes)
        limit = self.upload_limit if upload else self.limit  # per request: never shared
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _error(send, 413, "too_large", _too_large(limit), None)
            return
        nul_at = _nul_in_url(scope)
        if nul_at is not None:
            await _error(send, 422, "invalid", "NUL characters are not allowed", nul_at)
            return
        body = await _read(receive, limit)
        if body is None:
            await _error(send, 413, "too_large", _too_large(limit), None)
            return
        binary = headers.get(b"content-type", b"").startswith(
            (b"multipart/form-data", b"application/octet-stream")
        )  # uploads and agents' logs carry NUL bytes; they are files, not database text
        if not binary and not headers.get(b"content-type", b"").startswith(_FORM):
            too_deep = (
                _too_deep(body)
                if len(body) <= _INLINE_SCAN
                else await to_thread.run_sync(_too_deep, body)
            )
            if too_deep is not None:
                message = (
                    f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels "
                    f"(at character {too_deep})"
                )
                await _error(send, 422, "invalid", message, None)
                return
        if not binary and (b"\x00" in body or b"\\u0000" in body):
            nul, field = (
                _nul_in_body(body)
                if len(body) <= _INLINE_SCAN
                else await to_thread.run_sync(_nul_in_body, body)
            )
            if nul:
                await _error(send, 422, "invalid", "NUL characters are not allowed", field)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _read(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None once it passes the limit."""
    chunks: list[bytes] = []
    seen = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        seen += len(chunk)
        if seen > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


_FORM = b"application/x-www-form-urlencoded"


def _too_deep(body: bytes, limit: int = MAX_JSON_DEPTH) -> int | None:
    """Where a JSON text first opens its `limit + 1`-th nested array or object, if it
    does (strings and their escapes skipped; nothing parsed)."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return None
    depth = 0
    in_string = False
    for match in _TOKENS.finditer(body):
        token = match.group()
        if token == b'"':
            in_string = not in_string
        elif in_string or token[0] == 0x5C:  # inside a string, or an escape
            continue
        elif token in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return match.start()
        else:
            depth -= 1
    return None


def _too_large(limit: int) -> str:
    return f"the request body is over the limit of {limit:,} bytes"


def _nul_in_url(scope: Scope) -> str | None:
    """The query parameter holding a NUL. (Path parameters are checked by their routes'
    patterns, which name them.)"""
    query = scope.get("query_string", b"").decode("latin-1")
    for key, value in parse_qsl(query, keep_blank_values=True):
        if "\x00" in key or "\x00" in value:
            return key.replace("\x00", "") or "query"
    return None


def _nul_in_body(body: bytes) -> tuple[bool, str | None]:
    """Whether the body holds a NUL (a raw byte, or a JSON `\\u0000` escape: not the text
    `\\u0000` inside a JSON string), and the dotted path of the first JSON string with one."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return b"\x00" in body, None
    field = _find_nul(data, [])
    return field is not None or b"\x00" in body, field or None


def _find_nul(node: Any, path: list[str]) -> str | None:
    """The dotted path of the first string holding a NUL ("" for the top)."""
    if isinstance(node, str):
        return ".".join(path) if "\x00" in node else None
    if isinstance(node, dict):
        items = [(str(k), v) for k, v in node.items()]
    elif isinstance(node, list):
        items = [(str(i), v) for i, v in enumerate(node)]
    else:
        return None
    for key, value in items:
        if "\x00" in key:
            return ".".join([*path, key.replace("\x00", "")])
        found = _find_nul(value, [*path, key])
        if found is not None:
            return found
    return None


async def _error(send: Send, status: int, code: str, message: str, field: str | None) -> None:
    body = json.dumps({"error": {"code": code, "message": message, "field": field}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


class ConcurrencyLimit:
    """At most `limit` requests inside the app at once; the rest wait without holding a
    worker thread. For SQLite: a request holds the database's write lock across several
    worker-thread hops (dependencies, route, teardown), so a flood of requests each blocked
    on that lock in its own worker could starve the holder of the thread it needs next."""

    def __init__(self, app: ASGIApp, limit: int, exempt: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.slots = anyio.Semaphore(limit)
        self.exempt = exempt  # paths that take no write lock (the health probe)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in self.exempt:
            await self.app(scope, receive, send)
            return
        async with self.slots:
            scope[SLOTS] = self.slots  # a request may give its slot up while it waits
            await self.app(scope, receive, send)


SLOTS = "fabbrica.concurrency_slots"


@asynccontextmanager
async def slot_released(scope: Scope) -> AsyncIterator[None]:
    """Give the request's `ConcurrencyLimit` slot to others while it waits on something
    other than the database (a held agent sync), and take one back after."""
    slots = scope.get(SLOTS)
    if slots is None:
        yield
        return
    slots.release()
    try:
        yield
    finally:
        with anyio.CancelScope(shield=True):  # the middleware releases it once more
            await slots.acquire()
