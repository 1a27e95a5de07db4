"""Every factory's executor, looked up in one place.

The registry holds the executors this process drives itself (the emulated federation of
`fabbrica up --emulate-federation`, the embedded factory's link) and answers for every
other factory from the database: a factory of the catalog whose site agent is registered
(its token was made) is run through an `AgentLink`. Nothing rewires it at run time: a
factory is connected as soon as its agent row exists, in every process that reads the
same database.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from fabbrica.backends.agent_link import DEFAULT_LEASE, AgentLink
from fabbrica.catalog.model import Catalog
from fabbrica.core.executor import Executor
from fabbrica.store.db import Database
from fabbrica.store.models import Agent


class ExecutorRegistry:
    """factory id -> executor: the fixed ones first, then an `AgentLink` for each factory
    of the catalog with a registered agent. It only reads the database."""

    def __init__(
        self,
        db: Database,
        catalog: Catalog,
        clock: Callable[[], dt.datetime],
        *,
        files: Path | None = None,
        lease: dt.timedelta = DEFAULT_LEASE,
        fixed: Mapping[str, Executor] | None = None,
    ) -> None:
        self.db = db
        self.catalog = catalog
        self.clock = clock
        self.files = files
        self.lease = lease
        self.fixed: dict[str, Executor] = dict(fixed or {})
        self._links: dict[str, AgentLink] = {}
        self._lock = threading.Lock()
        self._seen: set[str] | None = None  # what `connected` last answered

    def connected(self, session: Session | None = None) -> set[str]:
        """The factories that can run jobs now: the fixed ones, and those of the catalog
        whose agent is registered. Reads with `session` when given (a request's or the
        control loop's own), else in a read session of its own."""
        if session is None:
            with self.db.read_session() as own:
                return self.connected(own)
        agents = set(session.scalars(select(Agent.factory_id)))
        with self._lock:
            for factory_id in agents - set(self.fixed) - set(self._links):
                if self.catalog.factory(factory_id) is not None:
                    self._links[factory_id] = self._link(factory_id)
            self._seen = set(self.fixed) | set(self._links)
            return set(self._seen)

    def seen(self, session: Session | None = None) -> set[str]:
        """The connected factories as this process last saw them, without reading the
        database again (the first time it reads). Safe where a smaller set can only make
        an answer more cautious: factories only ever join (an agent's row is never
        deleted), so every factory seen is still connected."""
        with self._lock:
            seen = None if self._seen is None else set(self._seen)
        return self.connected(session) if seen is None else seen

    def get(self, factory_id: str) -> Executor | None:
        """The factory's executor; None when nothing runs it (no agent registered)."""
        executor = self.fixed.get(factory_id)
        if executor is not None:
            return executor
        with self._lock:
            link = self._links.get(factory_id)
        if link is None and self.catalog.factory(factory_id) is not None:
            self.connected()  # an agent registered since this process last looked?
            with self._lock:
                link = self._links.get(factory_id)
        return link

    def __iter__(self) -> Iterator[str]:
        """The connected factories, in order."""
        return iter(sorted(self.connected()))

    def __contains__(self, factory_id: object) -> bool:
        return isinstance(factory_id, str) and self.get(factory_id) is not None

    def __getitem__(self, factory_id: str) -> Executor:
        executor = self.get(factory_id)
        if executor is None:
            raise KeyError(factory_id)
        return executor

    def _link(self, factory_id: str) -> AgentLink:
        return AgentLink(self.db, factory_id, self.clock, self.files, lease=self.lease)


def registry_of(
    executors: ExecutorRegistry | Mapping[str, Executor],
    db: Database,
    catalog: Catalog,
    clock: Callable[[], dt.datetime],
    *,
    files: Path | None = None,
    lease: dt.timedelta = DEFAULT_LEASE,
) -> ExecutorRegistry:
    """`executors` as a registry: itself, or a registry with them as its fixed ones."""
    if isinstance(executors, ExecutorRegistry):
        return executors
    return ExecutorRegistry(db, catalog, clock, files=files, lease=lease, fixed=executors)
