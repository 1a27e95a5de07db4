"""`AgentLink`: the executor of a factory run by a site agent, as the control loop sees it.

Its answers come from what the agent last reported (the `agents` and `jobs` tables), never
from the site: the agent pulls its work and pushes states, and the central service never
connects to a site. Its calls only read, because the control loop calls executors while it
holds its own transaction (on SQLite a second writer would wait for it). A job's lease
starts when it is dispatched and is renewed by the agent's syncs (services/agents.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.orm import Session

from fabbrica.core.errors import NotFound
from fabbrica.core.executor import (
    Capability,
    Capacity,
    LaunchRequest,
    RunState,
    RunStatus,
    UsageSample,
)
from fabbrica.core.jobs import JobState, job_id_of
from fabbrica.store.db import Database
from fabbrica.store.models import Agent, Job

DEFAULT_LEASE = dt.timedelta(seconds=60)
# Capacity older than this share of the agent lease is not used for placement (30 s of the
# default 60 s lease): an agent that has missed syncs for half its lease gets no new work.
STALE_SHARE_OF_LEASE = 0.5


class Offers:
    """Wakes what waits in this process for a factory's agent to have work: a job placed
    there (or one to cancel). The control loop notifies when it hands a job to the link;
    an agent loop in the same process (the embedded default) waits here instead of
    sleeping its interval, and so does a site agent's sync held by the API (`wait_async`),
    so a job submitted to an idle factory is launched at once.

    The link notifies while the loop's transaction is still open; the loop's `offers` step
    (`take_pending`) notifies again after the commit, here and, on PostgreSQL, to the
    other processes (store.signals.OFFER), whose listeners notify theirs (`publish=False`)."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._generation: dict[str, int] = {}
        self._epoch = 0  # `wake_all` calls: part of every factory's generation
        self._pending: set[str] = set()  # notified since the last `take_pending`
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]] = {}
        self.releases = 0  # `release` calls: a held sync that sees it move answers now

    def release(self) -> None:
        """Answer every held sync now (a server that stops, a test that ends): each one
        answers with what it has, whatever its wait."""
        with self._changed:
            self.releases += 1
            factories = list(self._waiters)
        for factory_id in factories:
            self.notify(factory_id, publish=False)

    def wake_all(self) -> None:
        """Wake every held sync once, whatever its factory: each checks the database again
        and, with nothing to do, waits on (a listener that reconnected: the offers sent
        while it was away are unknown). A sync between its check and its wait sees the
        generation move too, and checks again."""
        with self._changed:
            self._epoch += 1
            self._changed.notify_all()
            waiters = [w for held in self._waiters.values() for w in held]
            self._waiters.clear()
        for loop, future in waiters:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, future)

    def generation(self, factory_id: str) -> int:
        with self._changed:
            return self._now(factory_id)

    def _now(self, factory_id: str) -> int:
        """The factory's generation (under the lock): its offers and every `wake_all`."""
        return self._generation.get(factory_id, 0) + self._epoch

    def notify(self, factory_id: str, *, publish: bool = True) -> None:
        with self._changed:
            self._generation[factory_id] = self._generation.get(factory_id, 0) + 1
            if publish:
                self._pending.add(factory_id)
            self._changed.notify_all()
            waiters = self._waiters.pop(factory_id, set())
        for loop, future in waiters:
            # a closed event loop raises: nobody waits there any more
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, future)

    def held(self, factory_id: str) -> int:
        """How many syncs of the factory's agent wait here now (`wait_async`)."""
        with self._changed:
            return len(self._waiters.get(factory_id, ()))

    def take_pending(self) -> set[str]:
        """The factories notified since the last call (the loop publishes them)."""
        with self._changed:
            pending, self._pending = self._pending, set()
        return pending

    def watch(self, factory_id: str) -> Callable[[float, threading.Event], bool]:
        """A wait for work that arrives after this call (see `wait`)."""
        since = self.generation(factory_id)
        return lambda timeout, stop: self.wait(factory_id, since, timeout, stop)

    def wait(
        self, factory_id: str, since: int, timeout: float, stop: threading.Event | None = None
    ) -> bool:
        """Until the factory's generation moves past `since` (True), `timeout` seconds pass
        or `stop` is set (False; checked every 0.25 s)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._now(factory_id) == since:
                left = deadline - time.monotonic()
                if left <= 0 or (stop is not None and stop.is_set()):
                    return False
                self._changed.wait(min(left, 0.25))
            return True

    async def wait_async(self, factory_id: str, since: int, timeout: float) -> bool:
        """`wait` on an event loop, holding no thread (an API replica holds many at once)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        waiter = (loop, future)
        with self._changed:
            if self._now(factory_id) != since:
                return True
            self._waiters.setdefault(factory_id, set()).add(waiter)
        try:
            await asyncio.wait_for(future, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            with self._changed:
                self._waiters.get(factory_id, set()).discard(waiter)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


OFFERS = Offers()  # this process's


class AgentLink:
    """An `Executor` for a factory run by a site agent: reads what the agent reported.

    Its calls only read (the control loop calls them while it holds its own transaction,
    and on SQLite a second writer would wait for it): a job's lease starts when it is
    dispatched and is renewed by the agent's syncs."""

    def __init__(
        self,
        db: Database,
        factory_id: str,
        clock: Callable[[], dt.datetime],
        files: Path | None = None,
        stale_after: dt.timedelta | None = None,  # None: STALE_SHARE_OF_LEASE of the lease
        lease: dt.timedelta = DEFAULT_LEASE,
        job_dirs: Callable[[str], Path] | None = None,
    ) -> None:
        self.db = db
        self.factory_id = factory_id
        self.name = f"agent {factory_id}"
        self.clock = clock
        self.files = files
        self.stale_after = stale_after or lease * STALE_SHARE_OF_LEASE
        self.lease = lease
        self.job_dirs = job_dirs  # an in-process agent's executor keeps the files here

    def _agent(self, session: Session) -> Agent | None:
        return session.get(Agent, self.factory_id)

    def capabilities(self) -> frozenset[Capability]:
        with self.db.read_session() as session:
            agent = self._agent(session)
            names = json.loads(agent.capabilities) if agent else []
        return frozenset(Capability(n) for n in names if n in Capability._value2member_map_)

    def capacity(self) -> list[Capacity]:
        """What the agent last reported, unless it has gone quiet (then nothing: no job is
        placed on a factory whose agent does not answer)."""
        with self.db.read_session() as session:
            agent = self._agent(session)
            if agent is None or agent.last_seen_at is None:
                return []
            if self.clock() - agent.last_seen_at > self.stale_after:
                return []
            return [Capacity(**c) for c in json.loads(agent.capacity)]

    def submit(self, request: LaunchRequest) -> RunStatus:
        """Nothing to do but wake the agent if it waits in this process: the job waits for
        the agent's next sync to take it."""
        OFFERS.notify(self.factory_id)
        return RunStatus(request.run_tag, RunState.PENDING)

    def poll(self, run_tags: list[str]) -> list[RunStatus]:
        now = self.clock()
        found = []
        with self.db.read_session() as session:
            for tag in run_tags:
                job_id = job_id_of(tag)
                job = session.get(Job, job_id) if job_id is not None else None
                if job is None:
                    found.append(RunStatus(tag, RunState.UNKNOWN))
                    continue
                since = job.dispatched_at or now
                expiry = job.lease_until or since + self.lease
                if expiry < now:
                    found.append(RunStatus(tag, RunState.LOST, reason="the agent's lease ran out"))
                elif job.state == JobState.RUNNING.value:
                    found.append(RunStatus(tag, RunState.RUNNING, started_at=job.started_at))
                else:
                    found.append(RunStatus(tag, RunState.PENDING))
        return found

    def cancel(self, run_tag: str) -> RunStatus:
        """A job the agent has not submitted yet (no site id) is cancelled here and now;
        otherwise the agent cancels it at its next sync (the job is marked)."""
        job_id = job_id_of(run_tag)
        with self.db.read_session() as session:
            job = session.get(Job, job_id) if job_id is not None else None
            if job is not None and job.state == JobState.DISPATCHED.value and not job.site_job_id:
                return RunStatus(run_tag, RunState.CANCELLED, reason="cancelled before it started")
        OFFERS.notify(self.factory_id)  # its agent cancels it at its next sync: now
        return self.poll([run_tag])[0]

    def usage(self, run_tags: list[str]) -> list[UsageSample]:
        return []

    def adopt(self) -> list[RunStatus]:
        return []

    def job_dir(self, tag: str) -> Path:
        """Where the agent's uploads of a job's log and outputs are kept on this server."""
        if self.job_dirs is not None:
            return self.job_dirs(tag)
        if self.files is None:
            raise NotFound("this server keeps no files of agents' jobs", field="job_id")
        return self.files / "agents" / self.factory_id / tag
