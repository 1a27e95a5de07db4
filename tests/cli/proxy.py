"""A TCP proxy for tests that counts the bytes a client sends and can hold them back once
a count is reached (to kill the client at a known point of an upload, without timing)."""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType
from typing import Self


class CountingProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.sent = 0  # client -> server bytes since the last reset
        self.hold_at: int | None = None  # stop forwarding once `sent` reaches it
        self.holding = threading.Event()
        self.released = threading.Event()
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self, hold_at: int | None = None) -> None:
        with self.lock:
            self.sent, self.hold_at = 0, hold_at
            self.holding.clear()
            self.released.clear()

    def release(self) -> None:
        """Drop every held connection (their client is gone) and forward again."""
        with self.lock:
            self.hold_at = None
            for sock in self.sockets:
                _close(sock)
            self.sockets.clear()
        self.released.set()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self.lock:
                self.sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, counted: bool) -> None:
        try:
            while data := source.recv(65536):
                if counted:
                    with self.lock:
                        hold = self.hold_at is not None and self.sent + len(data) > self.hold_at
                        if not hold:
                            self.sent += len(data)
                    if hold:
                        self.holding.set()
                        self.released.wait()
                        return  # the client was killed: these bytes never reach the server
                target.sendall(data)
        except OSError:
            pass
        finally:
            _close(target)
            _close(source)

    def close(self) -> None:
        self.release()
        _close(self.listener)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
