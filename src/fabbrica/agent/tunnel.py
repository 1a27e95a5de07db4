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

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from fabbrica.backends.notebook import Connection, netloc, read_connection
from fabbrica.core import tunnel
from fabbrica.core.notebooks import proxy_path, upstream_path
from fabbrica.core.tunnel import TunnelError

log = logging.getLogger("fabbrica.agent.tunnel")
MAX_BACKOFF = 30.0
READY_EVERY = 1.0
QUEUE = 1024  # messages for a notebook's socket not yet sent to it; past that it is closed
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

    def job_dir(self, job_id: int) -> Path | None:
        """The folder of a job's run at this site (its notebook's launcher writes there)."""
        ...


@dataclass
class _Incoming:
    """A stream the server opened: an HTTP request still arriving, or an open WebSocket
    (the messages for the notebook, put together again, and None once it closes)."""

    message: dict[str, Any]
    body: bytearray = field(default_factory=bytearray)
    to_notebook: asyncio.Queue[str | bytes | None] | None = None
    whole: tunnel.Message = field(default_factory=tunnel.Message)
    task: asyncio.Task[None] | None = None


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

        def spawn(coro: Any) -> asyncio.Task[None]:
            task = asyncio.create_task(coro)
            tasks.add(task)
            task.add_done_callback(_ended)
            return task

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
                    await self._data(send, streams, *tunnel.parse_data(frame))
                    continue
                message = tunnel.parse_control(frame)
                op, stream = message["op"], message.get("id", 0)
                if op == "http":
                    streams[stream] = _Incoming(message)
                elif op == "end" and stream in streams and streams[stream].to_notebook is None:
                    incoming = streams[stream]
                    incoming.task = spawn(self._http(send, stream, incoming, streams))
                elif op == "ws":
                    incoming = _Incoming(message, to_notebook=asyncio.Queue())
                    streams[stream] = incoming
                    incoming.task = spawn(self._websocket(send, stream, incoming, streams))
                elif op == "close" and stream in streams:
                    incoming = streams.pop(stream)
                    if incoming.to_notebook is not None:
                        incoming.to_notebook.put_nowait(None)
                    elif incoming.task is not None:
                        incoming.task.cancel()  # the member went away: no answer wanted
        finally:
            for task in list(tasks):
                task.cancel()
            for incoming in streams.values():
                if incoming.to_notebook is not None:
                    incoming.to_notebook.put_nowait(None)

    @staticmethod
    async def _data(
        send: Callable[[str | bytes], Any],
        streams: dict[int, _Incoming],
        stream: int,
        kind: int,
        payload: bytes,
    ) -> None:
        """A data frame: part of a request's body, or of a message for a notebook's socket."""
        incoming = streams.get(stream)
        if incoming is None:
            return
        queue = incoming.to_notebook
        if queue is None:
            if len(incoming.body) + len(payload) > tunnel.MAX_BODY:
                streams.pop(stream)
                await send(tunnel.control("error", id=stream, status=413, detail="too large"))
            else:
                incoming.body += payload
            return
        try:
            message = incoming.whole.add(kind, payload)
        except TunnelError as exc:
            log.warning("notebook tunnel: stream %d closed: %s", stream, exc)
            message = None
            queue.put_nowait(None)
        if message is None:
            return
        if queue.qsize() >= QUEUE:  # the notebook does not keep up: this stream only ends
            streams.pop(stream, None)
            queue.put_nowait(None)
            return
        queue.put_nowait(message)

    async def _report_ready(self, send: Callable[[str], Any]) -> None:
        """Which notebooks answer: at once, then whenever that changes (polled)."""
        last: list[int] | None = None
        while not self._stop.is_set():
            try:
                ready = sorted(await asyncio.to_thread(self._ready))
            except Exception:  # a bad folder must not stop the reports: the next poll
                log.exception("notebook tunnel: which notebooks answer could not be told")
                ready = last or []
            if ready != last:
                await send(tunnel.control("ready", jobs=ready))
                last = ready
            await asyncio.sleep(self.ready_every)

    def _ready(self) -> set[int]:
        jobs = self.notebooks.running_jobs()
        return {job_id for job_id in jobs if self._reachable(job_id) is not None}

    def _connection(self, job_id: object) -> Connection | None:
        """The job's notebook, if this agent holds the job running and it answers at an
        address the agent may reach."""
        if not isinstance(job_id, int) or isinstance(job_id, bool):
            return None
        if job_id not in self.notebooks.running_jobs():
            return None
        return self._reachable(job_id)

    def _reachable(self, job_id: int) -> Connection | None:
        """The notebook of a job this agent holds running, if it answers at an address the
        agent may reach."""
        folder = self.notebooks.job_dir(job_id)
        found = read_connection(folder, proxy_path(job_id)) if folder is not None else None
        if found is None:
            return None
        if found.loopback:  # on this host: the port must be the job's user's own
            return found if found.owner in listeners(found.port) else None
        address = ipaddress.ip_address(found.host)
        return found if any(address in net for net in self.networks) else None

    # --- streams -------------------------------------------------------------------------

    async def _http(
        self,
        send: Callable[[str | bytes], Any],
        stream: int,
        incoming: _Incoming,
        streams: dict[int, _Incoming],
    ) -> None:
        try:
            await self._request(send, stream, incoming)
        finally:
            streams.pop(stream, None)

    async def _request(
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
            url = f"http://{netloc(found.host, found.port)}{_path(message, int(message['job']))}"
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
                f"ws://{netloc(found.host, found.port)}{_path(message, int(message['job']))}",
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
                await notebook.send(item)

        async def to_server() -> None:
            async for data in notebook:
                for frame in tunnel.message_frames(stream, data):
                    await send(frame)

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


def _path(message: dict[str, Any], job_id: int) -> str:
    """The request's path on the notebook: under the job's own proxy path (its JupyterLab's
    base_url), no `.` or `..` segment; anything else is refused."""
    path = upstream_path(str(message.get("path") or ""), str(message.get("query") or ""), job_id)
    if path is None:
        raise TunnelError(f"a request path outside notebook {job_id}")
    return path


def listeners(port: int) -> set[int]:
    """The uids of the sockets listening on TCP `port` on this host (Linux's /proc/net):
    the agent reaches a notebook on its own host only on a port its job's user holds, not
    another service's."""
    uids = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 7 and fields[3] == "0A" and fields[1].endswith(f":{port:04X}"):
                uids.add(int(fields[7]))
    return uids
