"""One controller leads through a PostgreSQL advisory lock held on a connection of its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from fabbrica.store.db import normalise_url
from fabbrica.store.leader import LEADER_KEY, SETUP_KEY, Leadership, setup_lock
from tests.conftest import PostgresServer


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> Iterator[str]:
    url = postgres_server.create()
    yield url
    postgres_server.drop(url)


def holder_pids(url: str) -> list[int]:
    engine = create_engine(normalise_url(url))
    with engine.connect() as conn:
        pids = conn.execute(
            text(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND (classid::bigint << 32) + objid::bigint = :key"
                # pg_locks is the server's: other tests' databases hold the same key
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ),
            {"key": LEADER_KEY},
        ).scalars()
        found = list(pids)
    engine.dispose()
    return found


def test_one_leads_the_other_takes_over_when_its_connection_dies(pg_url: str) -> None:
    first, second = Leadership(pg_url), Leadership(pg_url)
    try:
        assert first.hold() and first.leading
        assert not second.hold() and not second.leading
        assert first.hold()  # still: the check runs on the held connection
        (pid,) = holder_pids(pg_url)
        engine = create_engine(normalise_url(pg_url))
        with engine.connect() as conn:  # as a crash, a network cut or a restart would
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        engine.dispose()
        assert second.hold()  # the lock went with the connection
        assert not first.hold() and not first.leading  # the old leader knows it lost
        second.release()
        assert first.hold()  # and may lead again
    finally:
        first.dispose()
        second.dispose()


def test_without_a_database_nobody_leads_and_nothing_raises() -> None:
    away = Leadership("postgresql://fabbrica@127.0.0.1:1/gone")
    assert not away.hold() and not away.leading
    away.dispose()


def test_setup_runs_one_process_at_a_time(pg_url: str) -> None:
    engine = create_engine(normalise_url(pg_url))
    with setup_lock(engine), engine.connect() as conn:
        other = conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": SETUP_KEY})
        assert other.scalar_one() is False  # another process would wait here
    with engine.connect() as conn:  # released after
        taken = conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": SETUP_KEY})
        assert taken.scalar_one()
    engine.dispose()
