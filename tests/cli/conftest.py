"""Fixtures for the CLI tests: a real `fabbrica up` on SQLite or on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cli.server import Server, clean_env
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
def server(
    tmp_path_factory: pytest.TempPathFactory, server_env: dict[str, str]
) -> Iterator[Server]:
    """A server whose data and log live in their own directory, not in the test's
    tmp_path: a job spec there has a workdir of its own, not the server's database."""
    env = {**server_env, "FABBRICA_BOOTSTRAP_TOKEN": "t"}
    home = tmp_path_factory.mktemp("server")
    srv = Server(data_dir=home / "data", env=env, log=home / "up.log")
    yield srv
    srv.stop()
