"""Fixtures for the CLI tests: a real `fabbrica up` on SQLite or on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.server import Server, clean_env, open_for_job_users
from tests.conftest import PostgresServer


@pytest.fixture(params=["sqlite", "postgresql"])
def server_env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """Environment for `fabbrica up`: the embedded SQLite, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield clean_env()
        return
    pg: PostgresServer = request.getfixturevalue("postgres_server")
    url = pg.create()
    yield clean_env(FABBRICA_DATABASE_URL=url)
    pg.drop(url)


@pytest.fixture
def server(tmp_path: Path, server_env: dict[str, str]) -> Iterator[Server]:
    open_for_job_users(tmp_path / "data")  # as root, local jobs run as users of their own
    env = {**server_env, "FABBRICA_BOOTSTRAP_TOKEN": "t"}
    srv = Server(data_dir=tmp_path / "data", env=env, log=tmp_path / "up.log")
    yield srv
    srv.stop()
