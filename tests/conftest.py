"""Shared fixtures: a fresh database on SQLite and on PostgreSQL, an app, an admin token.

Every test that takes `db` runs twice, once per backend. PostgreSQL comes from
FABBRICA_TEST_POSTGRES_URL (default: the server on 127.0.0.1:5432). When it cannot be
reached, the PostgreSQL half fails on CI (CI=true) and is skipped, with the reason, elsewhere.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from fabbrica.api.app import create_app
from fabbrica.api.deps import AppContext
from fabbrica.catalog.loader import load_catalog
from fabbrica.catalog.model import Catalog
from fabbrica.services import identity
from fabbrica.services.access.calls import seed_calls
from fabbrica.store.db import Database, normalise_url
from fabbrica.store.migrate import upgrade
from fabbrica.store.models import Base

POSTGRES_ADMIN_URL = os.environ.get(
    "FABBRICA_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
ADMIN_TOKEN = "test-admin-token"


def on_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def need_service(reason: str) -> None:
    """A missing service fails the test on CI and skips it elsewhere."""
    if on_ci():
        pytest.fail(f"{reason} (CI must run this test)")
    pytest.skip(reason)


class PostgresServer:
    """Creates and drops throw-away databases on the test PostgreSQL server."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = normalise_url(admin_url)
        self.engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")

    def create(self) -> str:
        name = f"fabbrica_test_{uuid.uuid4().hex[:12]}"
        with self.engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        return make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)

    def drop(self, url: str) -> None:
        name = make_url(url).database
        with self.engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer(POSTGRES_ADMIN_URL)
    try:
        with server.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        need_service(f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL}: {exc}")
    yield server
    server.engine.dispose()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated, empty database per backend, for the whole session."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'fabbrica.db'}"
        cleanup = None
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        url = server.create()
        cleanup = server
    db = Database(url)
    upgrade(db.engine)
    db.dispose()
    yield url
    if cleanup is not None:
        cleanup.drop(url)


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    """The session's database, emptied after each test."""
    database = Database(database_url)
    yield database
    with database.engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())
    database.dispose()


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog()


class Clock:
    """A settable clock for tests of expiry and timestamps."""

    def __init__(self) -> None:
        self.now = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += dt.timedelta(**kwargs)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ctx(db: Database, catalog: Catalog, clock: Clock) -> AppContext:
    with db.session() as session:
        identity.bootstrap(session, now=clock(), token=ADMIN_TOKEN)
        seed_calls(session, catalog, clock())
    return AppContext(db=db, catalog=catalog, clock=clock)


@pytest.fixture
def api(ctx: AppContext) -> Iterator[TestClient]:
    """An in-process client of the real app on the real database; no token set."""
    with TestClient(create_app(ctx), raise_server_exceptions=False) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def admin() -> dict[str, str]:
    return bearer(ADMIN_TOKEN)


REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
