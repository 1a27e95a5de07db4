"""PostgreSQL LISTEN/NOTIFY between Fabbrica's processes: the wake-ups of sub-second dispatch.

Two channels. `WORK`: a `fabbrica serve` replica stored a submission or a cancel, so the
leading `fabbrica controller` runs a round now instead of at the end of its interval.
`OFFER` (payload: a factory id): the controller placed a job on the factory (or asked for
a cancel there), so the replica holding that factory's agent's waiting sync answers now.

A notification is only a hint to look sooner, and one sent while a listener is away (the
database restarted, its connection dropped) is lost: so each time a listener starts
listening, the first time too, it calls every handler once with an empty payload, and they
look again (the controller runs a round, every held sync checks the database again). On
SQLite (one process runs everything) none of this is used: the wake-ups stay inside the
process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from fabbrica.store.leader import lock_engine

log = logging.getLogger("fabbrica.signals")

WORK = "fabbrica_work"
OFFER = "fabbrica_offer"
RECONNECT_MAX = 10.0  # seconds between a listener's reconnection attempts, at most


def supported(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def notify(engine: Engine, channel: str, payloads: Iterable[str]) -> None:
    """Send one notification per payload, in one transaction (PostgreSQL folds duplicates
    of a transaction into one). Never raises: a missed hint only costs time."""
    sent = sorted(set(payloads))
    if not sent or not supported(engine):
        return
    try:
        with engine.begin() as conn:
            for payload in sent:
                conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": channel, "p": payload})
    except SQLAlchemyError as exc:
        log.debug("notify %s failed: %s", channel, exc)


class Notifier:
    """`notify` from a thread of its own, for callers that must not wait on the database
    (an API route on the event loop): `send` returns at once, and a burst of sends to one
    channel becomes one notification."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._pending: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fabbrica-notify", daemon=True)
        self._thread.start()

    def send(self, channel: str, payload: str = "") -> None:
        with self._lock:
            self._pending.setdefault(channel, set()).add(payload)
        self._ready.set()

    def close(self) -> None:
        self._stop.set()
        self._ready.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._ready.wait()
            self._ready.clear()
            with self._lock:
                pending, self._pending = self._pending, {}
            for channel, payloads in pending.items():
                notify(self.engine, channel, payloads)


class Listener:
    """LISTEN on channels from a thread of its own, on a connection of its own (no pool:
    it is held for the life of the listener), and call each channel's handler with the
    payload of every notification. Reconnects by itself when the connection fails. Each time
    it starts listening (the first time too) it calls every handler once with an empty
    payload: what was sent before, while it was not listening, is unknown."""

    def __init__(self, url: str, handlers: dict[str, Callable[[str], Any]]) -> None:
        self.url = url
        self.handlers = handlers
        self.connected = threading.Event()  # listening now (tests wait for it)
        self.listens = 0  # times it started listening and called the handlers (tests)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fabbrica-listen", daemon=True)

    def start(self) -> Listener:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        engine = lock_engine(self.url)
        pause = 0.5
        try:
            while not self._stop.is_set():
                try:
                    self._listen(engine)
                except Exception as exc:  # the database is away: try again, slower each time
                    if self.connected.is_set():  # it was listening: the first retry is soon
                        pause = 0.5
                    log.debug("listener: %s; reconnecting in %.1f s", exc, pause)
                self.connected.clear()
                self._stop.wait(pause)
                pause = min(pause * 2, RECONNECT_MAX)
        finally:
            engine.dispose()

    def _listen(self, engine: Engine) -> None:
        raw = engine.raw_connection()
        try:
            conn = raw.driver_connection
            assert conn is not None
            conn.autocommit = True
            for channel in self.handlers:
                conn.execute(f'LISTEN "{channel}"')
            self.connected.set()
            self._call_all("")  # what was sent while we were not listening
            self.listens += 1
            while not self._stop.is_set():
                for note in conn.notifies(timeout=1.0):
                    handler = self.handlers.get(note.channel)
                    if handler is not None:
                        self._call(handler, note.payload)
        finally:
            raw.close()

    def _call_all(self, payload: str) -> None:
        for handler in self.handlers.values():
            self._call(handler, payload)

    @staticmethod
    def _call(handler: Callable[[str], Any], payload: str) -> None:
        try:
            handler(payload)
        except Exception:  # a handler's bug must not end the listening
            log.exception("listener: a handler failed")
