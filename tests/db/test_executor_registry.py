"""The executor registry, on both databases: a factory is connected once its site agent is
registered in the database, in every registry that reads it (no route rewires anything),
only if the catalog has the factory; the executors a process drives itself come first."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from fabbrica.backends.agent_link import AgentLink
from fabbrica.backends.local import LocalExecutor
from fabbrica.catalog.model import Catalog
from fabbrica.services import agents
from fabbrica.services.executors import ExecutorRegistry
from fabbrica.store.db import Database
from fabbrica.store.models import Agent
from tests.conftest import Clock


def register(db: Database, factory_id: str, now: dt.datetime) -> None:
    with db.session() as session:
        agents.ensure_agent(session, factory_id, now=now)


def test_a_factory_is_connected_once_its_agent_is_registered(
    db: Database, catalog: Catalog, clock: Clock
) -> None:
    api_side = ExecutorRegistry(db, catalog, clock)
    loop_side = ExecutorRegistry(db, catalog, clock)  # another process, the same database
    assert api_side.connected() == set()
    assert api_side.get("jaif") is None
    with pytest.raises(KeyError):
        api_side["jaif"]
    register(db, "jaif", clock())
    for registry in (api_side, loop_side):
        link = registry.get("jaif")
        assert isinstance(link, AgentLink) and link.factory_id == "jaif"
        assert registry.connected() == {"jaif"}
        assert list(registry) == ["jaif"] and "jaif" in registry and "it4lia" not in registry
        assert registry.get("jaif") is link  # one link per factory, kept
    with db.read_session() as session:
        assert loop_side.connected(session) == {"jaif"}  # with the caller's own session


def test_an_agent_of_a_factory_missing_from_the_catalog_connects_nothing(
    db: Database, catalog: Catalog, clock: Clock
) -> None:
    register(db, "gone", clock())
    with db.read_session() as session:
        assert session.get(Agent, "gone") is not None
    registry = ExecutorRegistry(db, catalog, clock)
    assert registry.connected() == set()
    assert registry.get("gone") is None


def test_the_executors_a_process_drives_come_first(
    db: Database, catalog: Catalog, clock: Clock, tmp_path: Path
) -> None:
    local = LocalExecutor(tmp_path / "jobs", gpus=1, name="emulated jaif")
    registry = ExecutorRegistry(db, catalog, clock, fixed={"jaif": local})
    assert registry.get("jaif") is local and registry.connected() == {"jaif"}
    register(db, "jaif", clock())
    register(db, "it4lia", clock())
    assert registry.get("jaif") is local  # not replaced by a link
    assert isinstance(registry.get("it4lia"), AgentLink)
    assert registry.connected() == {"jaif", "it4lia"}
