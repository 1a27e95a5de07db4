"""PostgreSQL advisory locks: which `fabbrica controller` leads, and one schema setup at a time.

A session-level advisory lock belongs to the connection that took it: it is released when
that connection closes, whoever closes it (the process exits, is killed, loses its network,
or the server restarts). The leader therefore keeps one connection of its own for as long as
it leads, and checks it before every round of work; when the check fails it has lost the
lead, and another controller may already hold the lock.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from fabbrica.store.db import normalise_url

log = logging.getLogger("fabbrica.leader")

# Keys of Fabbrica's advisory locks (one 64-bit space per database; arbitrary but fixed).
LEADER_KEY = 0x46414252_00000001  # "FABR" 1: the controller that runs the control loop
SETUP_KEY = 0x46414252_00000002  # "FABR" 2: migrations, first admin and calls at start

# The held connection notices a dead peer within about 5 + 2 x 3 s of silence, instead of
# the kernel's two hours; a connection attempt gives up after 5 s.
KEEPALIVE: dict[str, Any] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
}


def lock_engine(url: str) -> Engine:
    """An engine for lock connections: no pool (a lock lives and dies with its connection)."""
    return create_engine(normalise_url(url), poolclass=NullPool, connect_args=KEEPALIVE)


class Leadership:
    """Lead through `pg_try_advisory_lock` on a connection held for the life of the lead."""

    def __init__(self, url: str, key: int = LEADER_KEY) -> None:
        self.engine = lock_engine(url)
        self.key = key
        self._conn: Connection | None = None

    @property
    def leading(self) -> bool:
        return self._conn is not None

    def hold(self) -> bool:
        """Whether this process leads now: the held connection still answers, or the lock
        was free and is taken. Never raises: a database away means "not leading"."""
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT 1"))
                return True
            except SQLAlchemyError as exc:
                log.warning("lost the lead: its connection failed (%s)", _short(exc))
                self._close()
        try:
            conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        except SQLAlchemyError as exc:
            log.debug("cannot reach the database to take the lead: %s", _short(exc))
            return False
        try:
            taken = conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key})
            if taken.scalar_one():
                self._conn = conn
                return True
        except SQLAlchemyError as exc:
            log.debug("cannot take the lead: %s", _short(exc))
        conn.close()
        return False

    def release(self) -> None:
        """Give the lead up (closing the connection releases the lock)."""
        self._close()

    def dispose(self) -> None:
        self._close()
        self.engine.dispose()

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except SQLAlchemyError:  # already broken: the server has let the lock go
                conn.invalidate()


@contextmanager
def setup_lock(engine: Engine) -> Iterator[None]:
    """One process at a time migrates the schema and seeds an empty database (several
    replicas may start at once). A no-op on SQLite, where one process runs everything."""
    if engine.dialect.name != "postgresql":
        yield
        return
    locks = lock_engine(engine.url.render_as_string(hide_password=False))
    try:
        with locks.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": SETUP_KEY})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": SETUP_KEY})
    finally:
        locks.dispose()


def _short(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc
    return " ".join(str(cause).split())[:200]
