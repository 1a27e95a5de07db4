"""The notebook tunnel: how a site agent carries its notebooks' traffic to the server over
one WebSocket it opens itself (the server never connects to a site).

The server multiplexes streams over the tunnel, one per proxied HTTP request or WebSocket.
Control messages are JSON text frames, `{"op": ..., "id": <stream>, ...}`:

    server -> agent   http   {id, job, method, path, query, headers}  then DATA frames, end
                      ws     {id, job, path, query, subprotocols}
                      close  {id}                      the member closed a WebSocket
    agent -> server   ready  {jobs: [job ids]}         the notebooks that answer now
                      response {id, status, headers}   then DATA frames, end
                      ws_ok  {id, subprotocol}
                      error  {id, status, detail}      the stream ends
                      close  {id}
    both ways         end    {id}                      a body is complete

Data are binary frames: a 4-byte stream id, a 1-byte kind and the payload. DATA is a part
of a body; TEXT or BYTES ends a WebSocket message, TEXT_PART or BYTES_PART is a part of one
that goes on in the next frame (a message is cut into frames of at most CHUNK bytes and put
together again at the far end: `message_frames`, `Message`). Pure: encoding and checking,
no I/O.
"""

from __future__ import annotations

import json
import struct
from typing import Any

DATA, TEXT, BYTES, TEXT_PART, BYTES_PART = 0, 1, 2, 3, 4
KINDS = frozenset({DATA, TEXT, BYTES, TEXT_PART, BYTES_PART})
HEADER = struct.Struct(">IB")
CHUNK = 256 * 1024  # bytes of a body per frame
MAX_CONTROL = 64 * 1024  # bytes of one control message
MAX_BODY = 64 * 1024 * 1024  # bytes of one proxied request or response body
MAX_MESSAGE = MAX_BODY  # bytes of one WebSocket message
MAX_STREAM = 2**31
OPS = frozenset({"http", "ws", "close", "ready", "response", "ws_ok", "error", "end"})
PATH = "/api/v1/agent/tunnel"  # where the agent opens it (a WebSocket)


class TunnelError(ValueError):
    """A frame the other side should never have sent: the tunnel is closed."""


def data_frame(stream: int, kind: int, payload: bytes) -> bytes:
    return HEADER.pack(stream, kind) + payload


def parse_data(frame: bytes) -> tuple[int, int, bytes]:
    """(stream, kind, payload) of a binary frame."""
    if len(frame) < HEADER.size:
        raise TunnelError("a data frame shorter than its header")
    stream, kind = HEADER.unpack_from(frame)
    if kind not in KINDS:
        raise TunnelError(f"a data frame of unknown kind {kind}")
    return stream, kind, frame[HEADER.size :]


def control(op: str, **fields: Any) -> str:
    assert op in OPS, op
    return json.dumps({"op": op, **fields}, separators=(",", ":"))


def parse_control(text: str) -> dict[str, Any]:
    """A control message, checked: a known `op`, and an integer `id` where it needs one."""
    if len(text) > MAX_CONTROL:
        raise TunnelError("a control message over 64 KiB")
    try:
        message = json.loads(text)
    except ValueError as exc:
        raise TunnelError("a control message that is not JSON") from exc
    if not isinstance(message, dict) or message.get("op") not in OPS:
        raise TunnelError("a control message without a known op")
    if message["op"] != "ready":
        stream = message.get("id")
        if not isinstance(stream, int) or isinstance(stream, bool) or not 0 < stream < MAX_STREAM:
            raise TunnelError(f"a {message['op']} message without a valid stream id")
    return message


def headers_of(value: object) -> list[tuple[str, str]]:
    """A message's headers: a list of [name, value] pairs of text."""
    if not isinstance(value, list):
        raise TunnelError("headers must be a list of pairs")
    pairs = []
    for item in value:
        if not (
            isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item)
        ):
            raise TunnelError("headers must be a list of [name, value] pairs of text")
        pairs.append((item[0], item[1]))
    return pairs


def ready_jobs(message: dict[str, Any]) -> frozenset[int]:
    jobs = message.get("jobs")
    if not isinstance(jobs, list) or not all(
        isinstance(j, int) and not isinstance(j, bool) for j in jobs
    ):
        raise TunnelError("ready needs a list of job ids")
    return frozenset(jobs)


def message_frames(stream: int, message: str | bytes) -> list[bytes]:
    """A WebSocket message as data frames of at most CHUNK bytes of payload each."""
    binary = isinstance(message, bytes)
    raw = message if isinstance(message, bytes) else message.encode()
    part, last = (BYTES_PART, BYTES) if binary else (TEXT_PART, TEXT)
    starts = range(0, max(len(raw), 1), CHUNK)
    return [
        data_frame(stream, last if start + CHUNK >= len(raw) else part, raw[start : start + CHUNK])
        for start in starts
    ]


class Message:
    """A WebSocket message put together again from its frames."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def add(self, kind: int, payload: bytes) -> str | bytes | None:
        """The whole message once its last frame is in, else None; TunnelError past
        MAX_MESSAGE, for a body's frame or for text that is not UTF-8."""
        if kind == DATA:
            raise TunnelError("a body's frame in a WebSocket stream")
        self.size += len(payload)
        if self.size > MAX_MESSAGE:
            raise TunnelError("a WebSocket message over 64 MiB")
        self.parts.append(payload)
        if kind in (TEXT_PART, BYTES_PART):
            return None
        raw, self.parts, self.size = b"".join(self.parts), [], 0
        if kind == BYTES:
            return raw
        try:
            return raw.decode()
        except UnicodeDecodeError as exc:
            raise TunnelError("a text message that is not UTF-8") from exc
