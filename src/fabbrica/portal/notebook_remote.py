"""The notebook proxy's way to a notebook at a site: through the notebook tunnel its site
agent opened (api.tunnels, core.tunnel). The agent adds the notebook's token at the site;
what the member sends and gets back is as for a notebook on this server. While the agent
is away (restarting, its network down) the notebook keeps running and the member gets a
clear "reconnecting" answer (503, Retry-After) until the agent is back."""

from __future__ import annotations

import asyncio
import contextlib
import html

from fastapi import Request, WebSocket
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.websockets import WebSocketDisconnect

from fabbrica.api.tunnels import Reconnecting, Stream, TunnelHub
from fabbrica.core import tunnel
from fabbrica.services.notebooks import Remote

ANSWER_S = 300.0  # the longest the agent may take to answer a request
RETRY_S = 5


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


def _failed(remote: Remote, status: int, detail: str, request: Request | None) -> Response:
    if status == 503:
        return reconnecting(request, remote)
    code = "not_found" if status == 404 else "unavailable"
    return JSONResponse({"detail": detail[:500], "code": code}, status_code=status)


async def http(
    hub: TunnelHub,
    remote: Remote,
    request: Request,
    headers: dict[str, str],
    body: bytes,
) -> Response:
    """One request to the notebook, its whole answer back."""
    try:
        stream = hub.open(remote.factory)
    except Reconnecting:
        return reconnecting(request, remote)
    try:
        await stream.send_control(
            "http",
            job=remote.job_id,
            method=request.method,
            path=request.url.path,
            query=request.url.query,
            headers=[[k, v] for k, v in headers.items()],
        )
        if body:
            await stream.send_data(tunnel.DATA, body)
        await stream.send_control("end")
        return await _response(stream, remote, request)
    except (TimeoutError, RuntimeError, OSError):
        return reconnecting(request, remote)
    finally:
        stream.close()


async def _response(stream: Stream, remote: Remote, request: Request) -> Response:
    op, message = await asyncio.wait_for(stream.next(), ANSWER_S)
    if op == "error":
        return _failed(remote, int(message.get("status", 502)), str(message.get("detail")), request)
    if op != "response":
        return _failed(remote, 502, f"the agent answered {op}", request)
    parts: list[bytes] = []
    size = 0
    while True:
        op, item = await asyncio.wait_for(stream.next(), ANSWER_S)
        if op == "end":
            break
        if op == "error":
            return _failed(remote, int(item.get("status", 502)), str(item.get("detail")), request)
        if op == "data":
            parts.append(item[1])
            size += len(item[1])
            if size > tunnel.MAX_BODY:
                return _failed(remote, 502, "the notebook's answer is too large", request)
    response = Response(b"".join(parts), status_code=int(message.get("status", 502)))
    for key, value in tunnel.headers_of(message.get("headers", [])):
        response.headers.append(key, value)
    return response


async def websocket(
    hub: TunnelHub, remote: Remote, member: WebSocket, path: str, query: str
) -> None:
    """A WebSocket to the notebook, carried both ways until either side closes."""
    try:
        stream = hub.open(remote.factory)
    except Reconnecting:
        await member.send_denial_response(reconnecting(None, remote))
        return
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
        await _pump(member, stream)
    except (TimeoutError, RuntimeError, OSError):
        with contextlib.suppress(RuntimeError):
            await member.close(code=1012)  # service restart: the client may reconnect
    finally:
        stream.close()


async def _pump(member: WebSocket, stream: Stream) -> None:
    async def to_notebook() -> None:
        while True:
            message = await member.receive()
            if message["type"] == "websocket.disconnect":
                await stream.send_control("close")
                return
            if message.get("bytes") is not None:
                await stream.send_data(tunnel.BYTES, message["bytes"])
            elif message.get("text") is not None:
                await stream.send_data(tunnel.TEXT, message["text"].encode())

    async def to_member() -> None:
        while True:
            op, item = await stream.next()
            if op != "data":
                return  # closed, or the tunnel broke
            kind, payload = item
            if kind == tunnel.BYTES:
                await member.send_bytes(payload)
            else:
                await member.send_text(payload.decode(errors="replace"))

    tasks = [asyncio.create_task(to_notebook()), asyncio.create_task(to_member())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
                await task
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await member.close(code=1012)
