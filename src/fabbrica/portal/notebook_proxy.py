"""The way to a notebook: /notebooks/{job_id}/... proxied, HTTP and WebSocket, to the
JupyterLab its job serves on 127.0.0.1. Thin: services.notebooks says whose it is and where
it listens. Authorised by the member's portal session (cookie) or API token (Bearer);
JupyterLab's own token is added here and never reaches the member. Anyone else's notebook,
or one that has ended, is 404; no credentials: 401, or a redirect to sign-in for a browser.
Fabbrica's cookies and the member's credentials never reach JupyterLab."""

from __future__ import annotations

import contextlib
import logging
from urllib.parse import quote, urlsplit

import httpx
from fastapi import APIRouter, Request, WebSocket
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.websockets import WebSocketDisconnect
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidHandshake

from fabbrica.api.deps import AppContext
from fabbrica.core.errors import FabbricaError, Unauthenticated
from fabbrica.core.notebooks import PROXY_PREFIX, upstream_path
from fabbrica.portal import notebook_remote
from fabbrica.portal.web import CSRF_COOKIE, SESSION_COOKIE
from fabbrica.services import identity, notebooks, portal_sessions
from fabbrica.services.notebooks import Endpoint, Remote

router = APIRouter(include_in_schema=False)
log = logging.getLogger(__name__)
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
TIMEOUT = httpx.Timeout(300.0, connect=5.0)
# hop-by-hop headers, and what is Fabbrica's (credentials, its cookies) or the proxy's to set
DROPPED = frozenset(
    {
        "host", "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
        "trailer", "transfer-encoding", "upgrade", "authorization", "cookie", "origin",
        "content-length", "accept-encoding",
    }
)  # fmt: skip
DROPPED_BACK = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}
)
OURS = (SESSION_COOKIE, CSRF_COOKIE)


def _reach(
    ctx: AppContext, cookies: dict[str, str], authorization: str | None, job_id: int
) -> Endpoint | Remote:
    """Who asks (session cookie or Bearer token) and where their notebook listens; a
    FabbricaError otherwise (Unauthenticated, NotFound, Unavailable)."""
    with ctx.db.session() as session:
        now = ctx.clock()
        user = None
        secret = cookies.get(SESSION_COOKIE)
        if secret:
            row = portal_sessions.current(session, secret, now=now)
            user = row.user if row is not None else None
        if user is None and authorization and authorization.lower().startswith("bearer "):
            user = identity.authenticate(session, authorization[7:].strip(), now=now)
        if user is None:
            raise Unauthenticated("sign in, or send Authorization: Bearer <token>")
        found = notebooks.find_endpoint(session, user, ctx.executors, job_id)
        session.commit()  # a session cookie's last use
        return found


def _cross_site(origin: str | None, host: str | None) -> bool:
    """A request a page of another site made (its Origin is not this server)."""
    return origin is not None and origin != "null" and urlsplit(origin).netloc != host


def _refusal(request: Request, exc: FabbricaError) -> Response:
    if isinstance(exc, Unauthenticated) and "text/html" in request.headers.get("accept", ""):
        target = quote(request.url.path, safe="/")
        return RedirectResponse(f"/sign-in?next={target}", status_code=303)
    headers = {"Retry-After": "2"} if exc.status == 503 else None
    body = {"detail": exc.message, "code": exc.code}
    return JSONResponse(body, status_code=exc.status, headers=headers)


def _job_id(text: str) -> int | None:
    return int(text) if text.isdigit() and 0 < len(text) < 16 else None


@router.api_route(PROXY_PREFIX + "/{job_id}/{path:path}", methods=METHODS)
async def proxy_http(request: Request, job_id: str, path: str) -> Response:
    ctx: AppContext = request.app.state.ctx
    number = _job_id(job_id)
    if number is None:
        return JSONResponse({"detail": "no such notebook", "code": "not_found"}, 404)
    if _cross_site(request.headers.get("origin"), request.headers.get("host")):
        return JSONResponse({"detail": "refused: another site's page", "code": "forbidden"}, 403)
    try:
        found = await run_in_threadpool(
            _reach, ctx, dict(request.cookies), request.headers.get("authorization"), number
        )
    except FabbricaError as exc:
        return _refusal(request, exc)
    headers = {k: v for k, v in request.headers.items() if k.lower() not in DROPPED}
    kept = "; ".join(f"{k}={v}" for k, v in request.cookies.items() if k not in OURS)
    if kept:
        headers["cookie"] = kept
    if isinstance(found, Remote):  # the agent adds the notebook's token at the site
        sent = await request.body()
        return await notebook_remote.http(ctx.tunnels, found, request, headers, sent)
    headers["authorization"] = f"token {found.token}"
    target = upstream_path(request.url.path, request.url.query, number)
    if target is None:
        return JSONResponse({"detail": "no such path in this notebook", "code": "not_found"}, 404)
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        try:
            upstream = await client.request(
                request.method,
                f"http://127.0.0.1:{found.port}{target}",
                headers=headers,
                content=await request.body(),
            )
        except httpx.HTTPError:
            body = {"detail": f"notebook {number} does not answer; retry", "code": "unavailable"}
            return JSONResponse(body, status_code=502)
    back = [(k, v) for k, v in upstream.headers.multi_items() if k.lower() not in DROPPED_BACK]
    response = Response(upstream.content, status_code=upstream.status_code)
    for key, value in back:
        response.headers.append(key, value)
    return response


@router.websocket(PROXY_PREFIX + "/{job_id}/{path:path}")
async def proxy_websocket(websocket: WebSocket, job_id: str, path: str) -> None:
    ctx: AppContext = websocket.app.state.ctx
    number = _job_id(job_id)
    if number is None:
        await websocket.send_denial_response(Response(status_code=404))
        return
    if _cross_site(websocket.headers.get("origin"), websocket.headers.get("host")):
        await websocket.send_denial_response(Response(status_code=403))
        return
    try:
        found = await run_in_threadpool(
            _reach, ctx, dict(websocket.cookies), websocket.headers.get("authorization"), number
        )
    except FabbricaError as exc:
        await websocket.send_denial_response(Response(exc.message, status_code=exc.status))
        return
    if isinstance(found, Remote):
        await notebook_remote.websocket(
            ctx.tunnels, found, websocket, websocket.url.path, websocket.url.query
        )
        return
    target = upstream_path(websocket.url.path, websocket.url.query, number)
    if target is None:
        await websocket.send_denial_response(Response(status_code=404))
        return
    url = f"ws://127.0.0.1:{found.port}{target}"
    offered = websocket.scope.get("subprotocols") or []
    try:
        upstream = await ws_connect(
            url,
            additional_headers={"Authorization": f"token {found.token}"},
            subprotocols=offered or None,
            max_size=None,
            open_timeout=120,  # JupyterLab answers once the kernel has started
        )
    except (OSError, InvalidHandshake, TimeoutError) as exc:
        log.warning("notebook %d: its WebSocket %s refused: %r", number, path, exc)
        await websocket.send_denial_response(Response(status_code=502))
        return
    async with upstream:
        await websocket.accept(subprotocol=upstream.subprotocol)
        await _pump(websocket, upstream)


async def _pump(websocket: WebSocket, upstream: ClientConnection) -> None:
    """Messages both ways until either side closes."""
    try:
        await notebook_remote.pump(websocket, upstream.send, aiter(upstream))
    finally:
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await websocket.close()
