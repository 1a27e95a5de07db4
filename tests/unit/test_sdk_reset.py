"""The SDK over a real socket whose server closes a kept-alive connection as the next
request arrives (what an idle timeout does at the wrong moment): a read is sent again on a
new connection, a POST is not (it may have been done), and says so."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator

import pytest

from fabbrica.client import Client, ConnectError


class DroppingServer:
    """Answers the first request of each connection, then closes the connection when the
    second arrives, without an answer. Counts the requests it saw, answered or not."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.seen: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
        with conn:
            for n in range(2):
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    head += chunk
                method, path, _ = head.split(b" ", 2)
                self.seen.append(f"{method.decode()} {path.decode()}")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)  # fmt: skip
                body = head.split(b"\r\n\r\n", 1)[1]
                while len(body) < length:
                    body += conn.recv(4096)
                if n == 1:
                    return  # closed as the second request arrives: no answer
                payload = json.dumps({"status": "ok", "id": 1}).encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Connection: keep-alive\r\nContent-Length: "
                             + str(len(payload)).encode() + b"\r\n\r\n" + payload)  # fmt: skip

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def server() -> Iterator[DroppingServer]:
    found = DroppingServer()
    yield found
    found.close()


def test_a_read_is_sent_again_when_its_kept_alive_connection_was_closed(
    server: DroppingServer,
) -> None:
    with Client(f"http://127.0.0.1:{server.port}", "fab_t") as client:
        assert client.job(1)["id"] == 1
        assert client.job(1)["id"] == 1  # its connection dropped: sent again, answered
    assert server.seen == ["GET /api/v1/jobs/1"] * 3


def test_a_post_is_not_sent_again_and_the_error_says_the_connection_broke(
    server: DroppingServer,
) -> None:
    with Client(f"http://127.0.0.1:{server.port}", "fab_t") as client:
        client.job(1)
        with pytest.raises(ConnectError):
            client.cancel(1)  # it may have been done: never twice
    assert server.seen == ["GET /api/v1/jobs/1", "POST /api/v1/jobs/1/cancel"]
