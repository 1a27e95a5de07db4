"""The site agent's notebook tunnel: a WebSocket the agent opens to the server (with its
factory token) and keeps open; the notebook proxy reaches the factory's notebooks through
it (core.tunnel, api.tunnels). The server never opens a connection to a site."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from fabbrica.api.deps import AppContext
from fabbrica.core.errors import FabbricaError, Unauthenticated
from fabbrica.core.tunnel import PATH
from fabbrica.services import agents, identity

router = APIRouter(include_in_schema=False)


def _factory(ctx: AppContext, authorization: str | None) -> str:
    """The factory whose agent token this is; a FabbricaError otherwise."""
    if not authorization or not authorization.lower().startswith("bearer "):
        raise Unauthenticated("send Authorization: Bearer <the factory's agent token>")
    with ctx.db.session() as session:
        user = identity.authenticate(session, authorization[7:].strip(), now=ctx.clock())
        factory = agents.factory_of(user)
        session.commit()
        return factory


@router.websocket(PATH)
async def agent_tunnel(websocket: WebSocket) -> None:
    ctx: AppContext = websocket.app.state.ctx
    try:
        factory = await run_in_threadpool(_factory, ctx, websocket.headers.get("authorization"))
    except FabbricaError as exc:
        await websocket.send_denial_response(Response(exc.message, status_code=exc.status))
        return
    await websocket.accept()
    await ctx.tunnels.serve(factory, websocket)
