"""The embedded default's wiring: the agent of a factory that runs inside `fabbrica up`
(the `local` factory). It is the same agent loop as a site's, with calls that go to the
services directly instead of over HTTP; it sits beside `server.py`, above the services."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Callable
from pathlib import Path

from fabbrica.catalog.model import Catalog
from fabbrica.core.agent_api import (
    ApiRefused,
    ApiUnavailable,
    SiteAccount,
    SyncAnswer,
    SyncReport,
)
from fabbrica.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from fabbrica.core.executor import Capacity, RunStatus
from fabbrica.services import agents, checkpoints, dataset_staging
from fabbrica.services.dataset_store import object_path
from fabbrica.store.db import Database
from fabbrica.store.models import Job, User


class InProcessClient:
    """`AgentClient`'s calls, answered by the services in this process."""

    def __init__(
        self,
        db: Database,
        catalog: Catalog,
        factory_id: str,
        clock: Callable[[], dt.datetime],
        lease: dt.timedelta,
        server_url: str | None = None,
        files: Path | None = None,
    ) -> None:
        """`server_url`: where this machine's jobs reach the API (their MLflow tracking
        URI is under it); `files`: the server's data directory (data sets' bytes)."""
        self.db = db
        self.server_url = server_url
        self.files = files
        self.catalog = catalog
        self.factory_id = factory_id
        self.clock = clock
        self.lease = lease
        with db.session() as session:
            self.user_id = agents.ensure_agent(session, factory_id, now=clock()).id

    def close(self) -> None:
        return None

    def sync(
        self,
        backend: str,
        capabilities: list[str],
        capacity: list[Capacity],
        runs: list[RunStatus],
        wait: float = 0.0,
    ) -> SyncAnswer:
        """Answered at once (`wait` is not used): the embedded agent waits for work on
        `agent_link.OFFERS` between its rounds instead."""
        report = SyncReport(backend, capabilities, capacity, runs)
        try:
            with self.db.session() as session:
                actor = session.get_one(User, self.user_id)
                return agents.sync(
                    session,
                    self.catalog,
                    actor,
                    report,
                    now=self.clock(),
                    lease=self.lease,
                    server_url=self.server_url,
                    files=self.files,
                )
        except Exception as exc:  # the database is away: the loop backs off and retries
            raise ApiUnavailable(f"sync of {self.factory_id}: {exc}") from exc

    def accounts(self) -> list[SiteAccount]:
        return []

    def download(self, api_path: str, dest: Path) -> Path:
        """A job's workdir (`/agent/jobs/<id>/workdir`) or a data set file it reads
        (`/agent/jobs/<id>/objects/<sha256>`), copied from where the server keeps it."""
        parts = api_path.rstrip("/").split("/")
        if len(parts) >= 3 and parts[-2] == "objects":
            return self._object(int(parts[-3]), parts[-1], dest)
        job_id = int(parts[-2])
        if parts[-1] == "checkpoint":
            kept = checkpoints.stored(self.files, job_id)
            if kept is None:
                raise ApiRefused(f"job {job_id} has no checkpoint")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(kept.path, dest)
            return dest
        with self.db.session() as session:
            job = session.get(Job, job_id)
            source = job.workdir_archive if job is not None else None
        if not source:
            raise ApiUnavailable(f"job {job_id} has no workdir archive")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
        return dest

    def _object(self, job_id: int, sha256: str, dest: Path) -> Path:
        try:
            with self.db.session() as session:
                actor = session.get_one(User, self.user_id)
                job = agents.agent_job(session, actor, job_id)
                dataset_staging.agent_object(session, self.catalog, job, sha256)
        except (NotFound, Forbidden) as exc:  # as the API's 404 and 403 to a site's agent
            raise ApiRefused(f"{sha256} of job {job_id}: {exc}") from exc
        if self.files is None:
            raise ApiUnavailable("this server keeps no files")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(object_path(self.files, sha256), dest)
        return dest

    def send_log(self, job_id: int, offset: int, data: bytes) -> int:
        """The log is already where the server reads it (the executor's job directory)."""
        return offset + len(data)

    def send_checkpoint(
        self, job_id: int, run: int, *, offset: int, size: int, sha256: str, data: bytes
    ) -> tuple[int, bool]:
        try:
            with self.db.session() as session:
                actor = session.get_one(User, self.user_id)
                job = agents.agent_job(session, actor, job_id)
                return checkpoints.receive(
                    self.files, job, run=run, offset=offset, size=size, sha256=sha256, data=data
                )
        except (NotFound, Conflict, InvalidInput) as exc:  # as the API's 404, 409 and 400
            raise ApiRefused(f"checkpoint of job {job_id}: {exc}") from exc
