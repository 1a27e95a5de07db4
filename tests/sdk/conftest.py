"""Fixtures for the SDK tests: one real `fabbrica up` per module (on SQLite: the SDK never
sees the database) with the `local` factory; each test works as a user of its own."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.server import Server, clean_env


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("server")
    python_bin = str(Path(sys.executable).parent)  # the job's `python` has scikit-learn
    env = clean_env(
        FABBRICA_BOOTSTRAP_TOKEN="t",
        FABBRICA_LOCAL_GPUS="4",
        FABBRICA_LOOP_INTERVAL_SECONDS="0.2",
        PATH=f"{python_bin}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    srv = Server(data_dir=root / "data", env=env, log=root / "up.log")
    srv.start()
    yield srv
    srv.stop()
