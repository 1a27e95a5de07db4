"""The notebook proxy's way to a notebook at a site: through the notebook tunnel its site
agent opened (api.tunnels, core.tunnel). The agent adds the notebook's token at the site;
what the member sends and gets back is as for a notebook on this server. While the agent
is away (restarting, its network down) the notebook keeps running and the member gets a
clear "reconnecting" answer (503, Retry-After) until the agent is back."""

from __future__ import annotations

import asyncio
import contextlib
import html
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import Request, WebSocket
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.websockets import WebSocketDisconnect
from websockets.exceptions import ConnectionClosed

from fabbrica.api.tunnels import Reconnecting, Stream, TunnelHub
from fabbrica.core import tunnel
from fabbrica.core.tunnel import TunnelError
from fabbrica.services.notebooks import Remote

ANSWER_S = 300.0  # the longest the agent may take to answer a request
RETRY_S = 5
# what breaks one stream (the agent went away, or sent what it should not): never a 500
BROKEN = (RuntimeError, OSError, WebSocketDisconnect, TunnelError, ValueError, KeyError)


def reconnecting(request: Request | None, remote: Remote) -> Response:
    """503 while the factory's agent is away: JSON, or a page that retries for a browser."""
    detail = (
        f"notebook {remote.job_id} keeps running at {remote.factory}, whose site agent is"
        " reconnecting; retry in a few seconds"
    )
    headers = {"Retry-After": str(RETRY_S)}
    if request is not None and "text/html" in request.headers.get("accept", ""):
        page = (
            f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="refresh" content="{RETRY_S}"><title>Reconnecting</title>'
            f"</head><body><h1>Reconnecting…</h1><p>{html.escape(detail)}.</p></body></html>"
        )
        return HTMLResponse(page, status_code=503, headers=headers)
    body = {"detail": detail, "code": "reconnecting"}
    return JSONResponse(body, status_code=503, headers=headers)


def starting(remote: Remote) -> Response:
    detail = f"notebook {remote.job_id} is starting; try again shortly"
    body = {"detail": detail, "code": "unavailable"}
    return JSONResponse(body, status_code=503, headers={"Retry-After": "2"})


def _failed(remote: Remote, status: int, detail: str, request: Request | None) -> Response:
    if status == 503:
        return reconnecting(request, remote)
    code = {404: "not_found", 431: "too_large", 504: "timeout"}.get(status, "unavailable")
    return JSONResponse({"detail": detail[:500], "code": code}, status_code=status)


def _open(hub: TunnelHub, remote: Remote, request: Request | None) -> Stream | Response:
    """A stream to the notebook, or the answer that says why there is none yet."""
    if not hub.connected(remote.factory):
        return reconnecting(request, remote)
    if not hub.ready(remote.factory, remote.job_id):
        return starting(remote)
    try:
        return hub.open(remote.factory)
    except Reconnecting:
        return reconnecting(request, remote)


async def http(
    hub: TunnelHub,
    remote: Remote,
    request: Request,
    headers: dict[str, str],
    body: bytes,
) -> Response:
    """One request to the notebook, its whole answer back."""
    opened = _open(hub, remote, request)
    if isinstance(opened, Response):
        return opened
    stream = opened
    answered = False
    try:
        asked = tunnel.control(
            "http",
            id=stream.id,
            job=remote.job_id,
            method=request.method,
            path=request.url.path,
            query=request.url.query,
            headers=[[k, v] for k, v in headers.items()],
        )
        if len(asked) > tunnel.MAX_CONTROL:
            return _failed(remote, 431, "the request's headers are too large", request)
        await stream.tunnel.send_text(asked)
        await stream.send_body(body)
        await stream.send_control("end")
        response, answered = await _response(stream, remote, request)
        return response
    except TimeoutError:
        detail = f"notebook {remote.job_id} did not answer in {ANSWER_S:.0f} s"
        return _failed(remote, 504, detail, request)
    except BROKEN:
        return reconnecting(request, remote)
    finally:
        if not answered and stream.id in stream.tunnel.streams:  # the agent stops too
            with contextlib.suppress(*BROKEN):
                await stream.send_control("close")
        stream.close()


async def _response(stream: Stream, remote: Remote, request: Request) -> tuple[Response, bool]:
    """The answer, and whether the agent is done with the stream."""
    op, message = await asyncio.wait_for(stream.next(), ANSWER_S)
    if op == "error":
        status, detail = int(message.get("status", 502)), str(message.get("detail"))
        return _failed(remote, status, detail, request), True
    if op != "response":
        return _failed(remote, 502, f"the agent answered {op}", request), False
    parts: list[bytes] = []
    size = 0
    while True:
        op, item = await asyncio.wait_for(stream.next(), ANSWER_S)
        if op == "end":
            break
        if op == "error":
            status, detail = int(item.get("status", 502)), str(item.get("detail"))
            return _failed(remote, status, detail, request), True
        if op == "data":
            parts.append(item[1])
            size += len(item[1])
            if size > tunnel.MAX_BODY:
                detail = "the notebook's answer is over 64 MiB"
                return _failed(remote, 502, detail, request), False
    response = Response(b"".join(parts), status_code=int(message.get("status", 502)))
    for key, value in tunnel.headers_of(message.get("headers", [])):
        response.headers.append(key, value)
    return response, True


async def websocket(
    hub: TunnelHub, remote: Remote, member: WebSocket, path: str, query: str
) -> None:
    """A WebSocket to the notebook, carried both ways until either side closes."""
    opened = _open(hub, remote, None)
    if isinstance(opened, Response):
        await member.send_denial_response(opened)
        return
    stream = opened
    accepted = False
    try:
        offered = member.scope.get("subprotocols") or []
        await stream.send_control(
            "ws", job=remote.job_id, path=path, query=query, subprotocols=list(offered)
        )
        op, message = await asyncio.wait_for(stream.next(), ANSWER_S)
        if op != "ws_ok":
            status = int(message.get("status", 502)) if isinstance(message, dict) else 502
            await member.send_denial_response(Response(status_code=status))
            return
        await member.accept(subprotocol=message.get("subprotocol") or None)
        accepted = True
        await _pump(member, stream)
    except (TimeoutError, *BROKEN):
        if not accepted:
            with contextlib.suppress(*BROKEN):
                await member.send_denial_response(Response(status_code=502))
    finally:
        if stream.id in stream.tunnel.streams:  # the agent closes its side too
            with contextlib.suppress(*BROKEN):
                await stream.send_control("close")
        stream.close()
        if accepted:
            with contextlib.suppress(*BROKEN):
                await member.close(code=1012)  # service restart: the client may reconnect


async def _pump(member: WebSocket, stream: Stream) -> None:
    async def messages() -> AsyncIterator[str | bytes]:
        whole = tunnel.Message()
        while True:
            op, item = await stream.next()
            if op != "data":
                return  # closed, or the tunnel broke
            done = whole.add(*item)
            if done is not None:
                yield done

    await pump(member, stream.send_message, messages())


async def pump(
    member: WebSocket,
    send: Callable[[str | bytes], Awaitable[Any]],
    messages: AsyncIterator[str | bytes],
) -> None:
    """A member's WebSocket and the notebook's, both ways until either side closes: what
    the member sends goes to `send`, what `messages` yields goes to the member."""

    async def to_notebook() -> None:
        while True:
            message = await member.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes") is not None:
                await send(message["bytes"])
            elif message.get("text") is not None:
                await send(message["text"])

    async def to_member() -> None:
        async for message in messages:
            if isinstance(message, bytes):
                await member.send_bytes(message)
            else:
                await member.send_text(message)

    tasks = [asyncio.create_task(to_notebook()), asyncio.create_task(to_member())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed, *BROKEN):
                await task
