"""The agent's notebook tunnel: one WebSocket the agent opens to the server and keeps open
(reconnecting with backoff), over which the server's notebook proxy reaches the notebooks
this agent's jobs run (core.tunnel says the frames). A factory exposes no new port: every
connection starts at the site.

For each stream the server opens, the agent finds the job's notebook from the connection
file its launcher wrote (backends.notebook) in the job's folder, adds the notebook's token
(which never leaves the site) and carries the request or WebSocket to it. Only notebooks of
runs this agent holds are reached, at a loopback address or in `networks` (the compute
nodes' network, when JupyterLab listens on a node other than the agent's host). Every
second it tells the server which of its notebooks answer (`ready`).

It runs in a thread of its own with its own asyncio loop, beside the agent's sync loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from fabbrica.backends.notebook import Connection, read_connection
from fabbrica.core import tunnel
from fabbrica.core.notebooks import proxy_path
from fabbrica.core.tunnel import TunnelError

log = logging.getLogger("fabbrica.agent.tunnel")
MAX_BACKOFF = 30.0
READY_EVERY = 1.0
DROPPED_BACK = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}
)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def tunnel_url(api_url: str) -> str:
    """The tunnel's WebSocket address on the server at `api_url` (http -> ws)."""
    base = api_url.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base.removeprefix("https://") + tunnel.PATH
    return "ws://" + base.removeprefix("http://") + tunnel.PATH


class Notebooks(Protocol):
    """What the tunnel asks of the agent (agent.loop.Agent answers)."""

    def running_jobs(self) -> list[int]:
        """The ids of the jobs this agent holds running."""
        ...

    def connection_file(self, job_id: int) -> Path | None:
        """Where a running job's notebook launcher writes its connection file."""
        ...


@dataclass
class _Incoming:
    """A stream the server opened: an HTTP request still arriving, or an open WebSocket."""

    message: dict[str, Any]
    body: bytearray = field(default_factory=bytearray)
    to_notebook: asyncio.Queue[tuple[int, bytes] | None] | None = None


class NotebookTunnel:
    def __init__(
        self,
        api_url: str,
        token: str,
        notebooks: Notebooks,
        *,
        networks: Sequence[Network] = (),
        ready_every: float = READY_EVERY,
    ) -> None:
        self.url = tunnel_url(api_url)
        self.token = token
        self.notebooks = notebooks
        self.networks = tuple(networks)
        self.ready_every = ready_every
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: ClientConnection | None = None
        self._thread: threading.Thread | None = None

    # --- the thread ------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="notebook-tunnel", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        loop, server = self._loop, self._server
        if loop is not None and server is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # its loop ended meanwhile
                asyncio.run_coroutine_threadsafe(server.close(), loop)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        failures = 0
        while not self._stop.is_set():
            try:
                async with connect(
                    self.url,
                    additional_headers={"Authorization": f"Bearer {self.token}"},
                    max_size=tunnel.CHUNK + 64 * 1024,
                    open_timeout=30,
                ) as server:
                    self._server = server
                    failures = 0
                    self.connected.set()
                    log.info("notebook tunnel open to %s", self.url)
                    await self._serve(server)
            except InvalidStatus as exc:
                log.warning("notebook tunnel refused: HTTP %s", exc.response.status_code)
            except (OSError, InvalidHandshake, ConnectionClosed, TimeoutError) as exc:
                if failures == 0:
                    log.warning("notebook tunnel closed (%s); reconnecting", exc)
            except TunnelError as exc:
                log.warning("notebook tunnel: %s; reconnecting", exc)
            self._server = None
            self.connected.clear()
            failures += 1
            wait = min(0.5 * 2 ** min(failures, 10), MAX_BACKOFF)
            await asyncio.to_thread(self._stop.wait, wait)

    # --- one connection ----------------------------------------------------------------------

    async def _serve(self, server: ClientConnection) -> None:
        lock = asyncio.Lock()
        streams: dict[int, _Incoming] = {}
        tasks: set[asyncio.Task[None]] = set()

        async def send(frame: str | bytes) -> None:
            async with lock:
                await server.send(frame)

        def spawn(coro: Any) -> None:
            task = asyncio.create_task(coro)
            tasks.add(task)
            task.add_done_callback(_ended)

        def _ended(task: asyncio.Task[None]) -> None:
            tasks.discard(task)
            if not task.cancelled() and task.exception() is not None:
                log.error("notebook tunnel: a stream failed", exc_info=task.exception())

        spawn(self._report_ready(send))
        try:
            async for frame in server:
                if self._stop.is_set():
                    return
                if isinstance(frame, bytes):
                    stream, kind, payload = tunnel.parse_data(frame)
                    incoming = streams.get(stream)
                    if incoming is None:
                        continue
                    if incoming.to_notebook is not None:
                        await incoming.to_notebook.put((kind, payload))
                    elif len(incoming.body) + len(payload) > tunnel.MAX_BODY:
                        streams.pop(stream)
                        await send(
                            tunnel.control("error", id=stream, status=413, detail="too large")
                        )
                    else:
                        incoming.body += payload
                    continue
                message = tunnel.parse_control(frame)
                op, stream = message["op"], message.get("id", 0)
                if op == "http":
                    streams[stream] = _Incoming(message)
                elif op == "end" and stream in streams and streams[stream].to_notebook is None:
                    incoming = streams.pop(stream)
                    spawn(self._http(send, stream, incoming))
                elif op == "ws":
                    incoming = _Incoming(message, to_notebook=asyncio.Queue())
                    streams[stream] = incoming
                    spawn(self._websocket(send, stream, incoming, streams))
                elif op == "close" and stream in streams:
                    queue = streams.pop(stream).to_notebook
                    if queue is not None:
                        await queue.put(None)
        finally:
            for task in list(tasks):
                task.cancel()
            for incoming in streams.values():
                if incoming.to_notebook is not None:
                    incoming.to_notebook.put_nowait(None)

    async def _report_ready(self, send: Callable[[str], Any]) -> None:
        """Which notebooks answer: at once, then whenever that changes (polled)."""
        last: list[int] | None = None
        while not self._stop.is_set():
            ready = sorted(await asyncio.to_thread(self._ready))
            if ready != last:
                await send(tunnel.control("ready", jobs=ready))
                last = ready
            await asyncio.sleep(self.ready_every)

    def _ready(self) -> set[int]:
        jobs = self.notebooks.running_jobs()
        return {job_id for job_id in jobs if self._connection(job_id) is not None}

    def _connection(self, job_id: object) -> Connection | None:
        """The job's notebook, if this agent holds the job running and it answers at an
        address the agent may reach."""
        if not isinstance(job_id, int) or isinstance(job_id, bool):
            return None
        if job_id not in self.notebooks.running_jobs():
            return None
        path = self.notebooks.connection_file(job_id)
        found = read_connection(path) if path is not None else None
        if found is None:
            return None
        address = ipaddress.ip_address(found.host)
        if not found.loopback and not any(address in net for net in self.networks):
            return None
        return found

    # --- streams -------------------------------------------------------------------------

    async def _http(
        self, send: Callable[[str | bytes], Any], stream: int, incoming: _Incoming
    ) -> None:
        message = incoming.message
        found = await asyncio.to_thread(self._connection, message.get("job"))
        if found is None:
            await send(
                tunnel.control("error", id=stream, status=502, detail="notebook not running here")
            )
            return
        try:
            headers = tunnel.headers_of(message.get("headers", []))
            url = f"http://{_netloc(found)}{_path(message, int(message['job']))}"
            async with httpx.AsyncClient(timeout=httpx.Timeout(300.0, connect=5.0)) as client:
                request = client.build_request(
                    str(message.get("method", "GET"))[:10],
                    url,
                    headers=[*headers, ("authorization", f"token {found.token}")],
                    content=bytes(incoming.body),
                )
                response = await client.send(request, stream=True)
                try:
                    back = [
                        [k, v]
                        for k, v in response.headers.multi_items()
                        if k.lower() not in DROPPED_BACK
                    ]
                    await send(
                        tunnel.control(
                            "response", id=stream, status=response.status_code, headers=back
                        )
                    )
                    async for part in response.aiter_bytes(tunnel.CHUNK):
                        await send(tunnel.data_frame(stream, tunnel.DATA, part))
                finally:
                    await response.aclose()
        except (httpx.HTTPError, TunnelError) as exc:
            await send(tunnel.control("error", id=stream, status=502, detail=f"notebook: {exc}"))
            return
        await send(tunnel.control("end", id=stream))

    async def _websocket(
        self,
        send: Callable[[str | bytes], Any],
        stream: int,
        incoming: _Incoming,
        streams: dict[int, _Incoming],
    ) -> None:
        message, queue = incoming.message, incoming.to_notebook
        assert queue is not None
        found = await asyncio.to_thread(self._connection, message.get("job"))
        if found is None:
            streams.pop(stream, None)
            await send(
                tunnel.control("error", id=stream, status=502, detail="notebook not running here")
            )
            return
        offered = [s for s in message.get("subprotocols") or [] if isinstance(s, str)]
        try:
            notebook = await connect(
                f"ws://{_netloc(found)}{_path(message, int(message['job']))}",
                additional_headers={"Authorization": f"token {found.token}"},
                subprotocols=offered or None,  # type: ignore[arg-type]
                max_size=None,
                open_timeout=120,  # JupyterLab answers once the kernel has started
            )
        except (OSError, InvalidHandshake, TimeoutError, TunnelError) as exc:
            streams.pop(stream, None)
            await send(tunnel.control("error", id=stream, status=502, detail=f"notebook: {exc}"))
            return
        await send(tunnel.control("ws_ok", id=stream, subprotocol=notebook.subprotocol))

        async def to_notebook() -> None:
            while (item := await queue.get()) is not None:
                kind, payload = item
                await notebook.send(payload if kind == tunnel.BYTES else payload.decode())

        async def to_server() -> None:
            async for data in notebook:
                kind = tunnel.BYTES if isinstance(data, bytes) else tunnel.TEXT
                raw = data if isinstance(data, bytes) else data.encode()
                await send(tunnel.data_frame(stream, kind, raw))

        tasks = [asyncio.create_task(to_notebook()), asyncio.create_task(to_server())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                    await task
            await notebook.close()
            if streams.pop(stream, None) is not None:
                with contextlib.suppress(ConnectionClosed):
                    await send(tunnel.control("close", id=stream))


def _netloc(found: Connection) -> str:
    return f"[{found.host}]:{found.port}" if ":" in found.host else f"{found.host}:{found.port}"


def _path(message: dict[str, Any], job_id: int) -> str:
    """The request's path on the notebook: under the job's proxy path, as its JupyterLab's
    base_url is; anything else is refused."""
    path, query = str(message.get("path") or ""), str(message.get("query") or "")
    if not path.startswith(proxy_path(job_id)) or any(c in path for c in "\r\n"):
        raise TunnelError(f"a request path outside notebook {job_id}")
    if any(c in query for c in "\r\n #"):
        raise TunnelError("a query that is not URL-encoded")
    path = quote(path, safe="/:@!$&'()*+,;=~")  # the member's path arrives decoded
    return f"{path}?{query}" if query else path
