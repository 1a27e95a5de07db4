"""The server's end of the site agents' notebook tunnels (core.tunnel): which factory's
agent is connected now, which of its notebooks answer, and the streams the notebook proxy
opens through them. In-process and asyncio: a tunnel lives in the server process its agent
connected to (docs/notebooks.md says what that means for several workers)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from dataclasses import dataclass, field
from typing import Any

from starlette.websockets import WebSocket

from fabbrica.core import tunnel
from fabbrica.core.tunnel import TunnelError

log = logging.getLogger(__name__)
QUEUE = 256  # frames a stream may hold unread; past that the stream (only) is dropped


class Reconnecting(RuntimeError):
    """The factory's agent is not connected (restarting, or its network is away)."""


class StreamError(RuntimeError):
    """The agent could not reach the notebook: `status` (404, 502) and why."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


@dataclass
class Stream:
    """One proxied request or WebSocket: what the agent sent for it, in order."""

    id: int
    tunnel: Tunnel
    inbox: asyncio.Queue[tuple[str, Any]] = field(default_factory=asyncio.Queue)

    async def next(self) -> tuple[str, Any]:
        """("response"|"ws_ok"|"error"|"end"|"close", message) or ("data", (kind, bytes))."""
        return await self.inbox.get()

    async def send_control(self, op: str, **fields: Any) -> None:
        await self.tunnel.send_text(tunnel.control(op, id=self.id, **fields))

    async def send_body(self, payload: bytes) -> None:
        for start in range(0, len(payload), tunnel.CHUNK):
            await self.tunnel.send_bytes(
                tunnel.data_frame(self.id, tunnel.DATA, payload[start : start + tunnel.CHUNK])
            )

    async def send_message(self, message: str | bytes) -> None:
        for frame in tunnel.message_frames(self.id, message):
            await self.tunnel.send_bytes(frame)

    def close(self) -> None:
        self.tunnel.streams.pop(self.id, None)


@dataclass
class Tunnel:
    factory: str
    websocket: WebSocket
    streams: dict[int, Stream] = field(default_factory=dict)
    ready: frozenset[int] = frozenset()
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def send_text(self, text: str) -> None:
        async with self.lock:
            await self.websocket.send_text(text)

    async def send_bytes(self, data: bytes) -> None:
        async with self.lock:
            await self.websocket.send_bytes(data)

    def open(self) -> Stream:
        stream = Stream(next(self.ids) % tunnel.MAX_STREAM or 1, self)
        self.streams[stream.id] = stream
        return stream

    def deliver(self, stream_id: int, item: tuple[str, Any]) -> None:
        """Hand what the agent sent to its stream. Never waits: a stream whose reader (the
        member) is too slow is dropped alone, not the tunnel with every other stream."""
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        if stream.inbox.qsize() >= QUEUE:
            self._drop(stream, "the member reads too slowly")
            return
        stream.inbox.put_nowait(item)

    def _drop(self, stream: Stream, why: str) -> None:
        while not stream.inbox.empty():
            stream.inbox.get_nowait()
        stream.inbox.put_nowait(("error", {"status": 502, "detail": why}))
        self.streams.pop(stream.id, None)
        task = asyncio.get_running_loop().create_task(
            self.send_text(tunnel.control("close", id=stream.id))
        )
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def broken(self) -> None:
        """The tunnel closed: every open stream hears so."""
        for stream in list(self.streams.values()):
            stream.inbox.put_nowait(("error", {"status": 503, "detail": "reconnecting"}))
        self.streams.clear()


class TunnelHub:
    """The agents' tunnels by factory: the newest connection of a factory wins."""

    def __init__(self) -> None:
        self.tunnels: dict[str, Tunnel] = {}

    def ready(self, factory: str, job_id: int) -> bool:
        found = self.tunnels.get(factory)
        return found is not None and job_id in found.ready

    def connected(self, factory: str) -> bool:
        return factory in self.tunnels

    def open(self, factory: str) -> Stream:
        found = self.tunnels.get(factory)
        if found is None:
            raise Reconnecting(f"the site agent of {factory} is not connected")
        return found.open()

    async def serve(self, factory: str, websocket: WebSocket) -> None:
        """Carry one agent's tunnel until it closes (the route accepted it)."""
        mine = Tunnel(factory, websocket)
        previous = self.tunnels.get(factory)
        self.tunnels[factory] = mine
        if previous is not None:  # an agent restarted, or two agents run for one factory
            log.warning("notebook tunnel of %s replaced by a new connection", factory)
            previous.broken()
            with contextlib.suppress(RuntimeError, OSError):
                await previous.websocket.close(code=4000, reason="replaced")
        log.info("notebook tunnel of %s connected", factory)
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("bytes") is not None:
                    stream, kind, payload = tunnel.parse_data(message["bytes"])
                    mine.deliver(stream, ("data", (kind, payload)))
                elif message.get("text") is not None:
                    self._control(mine, tunnel.parse_control(message["text"]))
        except TunnelError as exc:
            log.warning("notebook tunnel of %s closed: %s", factory, exc)
            with contextlib.suppress(RuntimeError):
                await websocket.close(code=1002)
        finally:
            if self.tunnels.get(factory) is mine:
                del self.tunnels[factory]
            mine.broken()
            log.info("notebook tunnel of %s disconnected", factory)

    @staticmethod
    def _control(mine: Tunnel, message: dict[str, Any]) -> None:
        op = message["op"]
        if op == "ready":
            mine.ready = tunnel.ready_jobs(message)
        elif op in ("response", "ws_ok", "error", "end", "close"):
            mine.deliver(message["id"], (op, message))
        else:
            raise TunnelError(f"an agent does not send {op}")
