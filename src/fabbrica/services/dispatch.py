"""The job side of the control loop: poll what runs, then place and start what waits.

State is written before every side effect: a job is `dispatched` (with its GPU-hours
reserved) in the database before its executor is asked to start it, and the executor tags
the run with the job's id. A restarted loop therefore finds every job again: a dispatched
job its executor does not know is started (once: executors refuse a second start of the
same id), a finished one is charged from what the run left behind, exactly once.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import replace

from sqlalchemy import select
from sqlalchemy.orm import Session

from fabbrica.catalog.model import Catalog
from fabbrica.core.errors import Conflict
from fabbrica.core.executor import Capability, DataMount, Executor, RunState, RunStatus
from fabbrica.core.jobs import JobState, run_tag
from fabbrica.core.jobspec import JobSpec
from fabbrica.sched import Allocation as SchedAllocation
from fabbrica.sched import Policy, Running, Snapshot, schedule
from fabbrica.sched.model import Job as SchedJob
from fabbrica.sched.model import Partition as SchedPartition
from fabbrica.services import accounting
from fabbrica.services.access.allocations import in_force
from fabbrica.services.dataset_store import object_path
from fabbrica.services.datasets import job_mounts, residency_by_job
from fabbrica.services.executors import ExecutorRegistry, registry_of
from fabbrica.services.jobs import as_sched_job, partitions_of
from fabbrica.services.run_status import apply_status, launch_request
from fabbrica.services.single_user import SingleUser
from fabbrica.store.db import Database
from fabbrica.store.models import Job, Project, UsageRecord

log = logging.getLogger("fabbrica.dispatch")
ACTIVE = (JobState.DISPATCHED.value, JobState.RUNNING.value)
USAGE_HALF_LIFE_S = 7 * 86400.0
QUEUE_LIMIT = 10_000


class Dispatcher:
    def __init__(
        self,
        db: Database,
        catalog: Catalog,
        executors: ExecutorRegistry | Mapping[str, Executor],
        clock: Callable[[], dt.datetime],
        policy: Policy | None = None,
        single_user: SingleUser | None = None,
    ) -> None:
        """`executors`: the registry, or the executors to make one of (then factories whose
        agent is registered are run through their link, as in the registry)."""
        self.db = db
        self.catalog = catalog
        self.executors = registry_of(executors, db, catalog, clock)
        self.clock = clock
        self.policy = policy or Policy()
        self.single_user = single_user or SingleUser()  # factories that run one user's jobs

    # --- steps ---------------------------------------------------------------------------

    def step(self) -> int:
        """One round: poll first (ended jobs free their GPUs), then dispatch."""
        return self.poll() + self.dispatch()

    def poll(self) -> int:
        changed = 0
        with self.db.session() as session:
            jobs = list(
                session.scalars(
                    select(Job)
                    .where(Job.state.in_(ACTIVE))
                    .with_for_update(skip_locked=True)
                    .execution_options(populate_existing=True)
                )
            )
            by_factory: dict[str, list[Job]] = defaultdict(list)
            for job in jobs:
                by_factory[job.factory_id or ""].append(job)
            relaunch = []
            for factory, group in by_factory.items():
                executor = self.executors.get(factory)
                if executor is None:
                    continue  # that factory's agent is not connected: nothing to learn
                statuses = executor.poll([run_tag(j.id) for j in group])
                for job, status in zip(group, statuses, strict=True):
                    if job.cancel_requested and not status.state.finished:
                        status = executor.cancel(run_tag(job.id))
                    unknown = status.state is RunState.UNKNOWN
                    if unknown and job.state == JobState.DISPATCHED:
                        relaunch.append(job.id)  # crashed between the commit and the start
                        continue
                    changed += self._apply(session, job, status)
        return changed + self._launch(relaunch)

    def dispatch(self) -> int:
        now = self.clock()
        with self.db.session() as session:
            queued = list(
                session.scalars(
                    select(Job)
                    .where(Job.state == JobState.QUEUED.value)
                    .order_by(Job.id)
                    .limit(QUEUE_LIMIT)
                    .with_for_update(skip_locked=True)  # another loop's jobs are its own
                )
            )
            if not queued:
                return 0
            snapshot = self._snapshot(session, queued, now)
            decision = schedule(snapshot)
            by_id = {str(j.id): j for j in queued}
            for waiting in decision.waiting:
                job = by_id[waiting.job]
                job.reason = _keep_lost(job.reason, waiting.reason)
            started = []
            for assignment in decision.assignments:
                job = by_id[assignment.job]
                try:
                    with session.begin_nested():
                        accounting.reserve(
                            session, job, assignment.allocation, assignment.charge_gpu_hours
                        )
                except Conflict as exc:  # the allocation changed since the snapshot
                    job.reason = exc.message
                    continue
                job.state = JobState.DISPATCHED.value
                job.factory_id, job.partition_id = assignment.factory, assignment.partition
                job.dispatched_at, job.reason = now, None
                started.append(job.id)
        return self._launch(started)

    # --- helpers -------------------------------------------------------------------------

    def _snapshot(self, session: Session, queued: list[Job], now: dt.datetime) -> Snapshot:
        active = list(session.scalars(select(Job).where(Job.state.in_(ACTIVE))))
        running: dict[tuple[str, str], list[Running]] = defaultdict(list)
        for job in active:
            began = job.started_at or job.dispatched_at or now
            end = began.timestamp() + job.time_limit_s
            running[(job.factory_id or "", job.partition_id or "")].append(Running(job.gpus, end))
        partitions = []
        for part in partitions_of(self.catalog, self.executors.connected(session)):
            executor = self.executors[part.factory]
            capacity = {c.partition: c for c in executor.capacity()}
            seen = capacity.get(part.id)
            if seen is None:
                continue
            # the agent's report may predate jobs dispatched since: never more free than
            # what the jobs Fabbrica has dispatched or running there leave
            ours = sum(r.gpus for r in running[(part.factory, part.id)])
            free = max(0, min(seen.free_gpus, seen.total_gpus - ours))
            partitions.append(
                replace(
                    part,
                    total_gpus=seen.total_gpus,
                    free_gpus=free,
                    running=tuple(running[(part.factory, part.id)]),
                    multi_node=part.multi_node and Capability.MULTI_NODE in executor.capabilities(),
                )
            )
        allocations = [
            SchedAllocation(
                a.id, a.project.id or "", a.factory_id, accounting.remaining(a), a.gpu_model
            )
            for a in session.scalars(in_force(now))
        ]
        data = residency_by_job(session, [j.id for j in queued])  # narrows their countries
        jobs = [
            as_sched_job(
                j,
                JobSpec.model_validate_json(j.spec),
                j.project.organisation.country,
                data.get(j.id),
            )
            for j in queued
        ]
        if self.single_user.factories:
            jobs = self._keep_off_held(session, queued, jobs, partitions, now)
        return Snapshot(
            now=now.timestamp(),
            jobs=tuple(jobs),
            partitions=tuple(partitions),
            allocations=tuple(allocations),
            usage=self._usage(session, now),
            policy=self.policy,
        )

    def _keep_off_held(
        self,
        session: Session,
        queued: list[Job],
        jobs: list[SchedJob],
        partitions: list[SchedPartition],
        now: dt.datetime,
    ) -> list[SchedJob]:
        """Jobs never go to a factory that runs another user's jobs only."""
        everywhere = frozenset(p.factory for p in partitions)
        refused: dict[int, frozenset[str]] = {}
        kept = []
        for row, job in zip(queued, jobs, strict=True):
            if row.user_id not in refused:
                found = self.single_user.refused(session, row.user_id, now)
                refused[row.user_id] = frozenset(found)
            if refused[row.user_id]:
                allowed = job.factories if job.factories is not None else everywhere
                job = replace(job, factories=allowed - refused[row.user_id])
            kept.append(job)
        return kept

    def _usage(self, session: Session, now: dt.datetime) -> dict[str, float]:
        """GPU-hours per project, halved every week of age (fair share's memory)."""
        since = now - dt.timedelta(days=60)
        rows = session.execute(
            select(Project.id, UsageRecord.gpu_hours, UsageRecord.created_at)
            .join(Job, Job.id == UsageRecord.job_id)
            .join(Project, Project.pk == Job.project_pk)
            .where(UsageRecord.created_at >= since)
        ).all()
        usage: dict[str, float] = defaultdict(float)
        for project, hours, at in rows:
            age = (now - at).total_seconds()
            usage[project or ""] += hours * 0.5 ** (age / USAGE_HALF_LIFE_S)
        return dict(usage)

    def _launch(self, job_ids: list[int]) -> int:
        launched = 0
        for job_id in job_ids:
            with self.db.session() as session:
                job = session.get(Job, job_id)
                if job is None or job.state != JobState.DISPATCHED:
                    continue
                executor = self.executors.get(job.factory_id or "")
                if executor is None:
                    continue  # its factory is not connected now; the next round retries
                request = launch_request(job, self._mounts(session, job.id))
            try:
                status = executor.submit(request)
            except Exception as exc:  # the backend refused: the job fails, nothing charged
                log.warning("job %s could not start: %s", job_id, exc)
                status = RunStatus(
                    request.run_tag, RunState.FAILED, reason=f"could not start: {exc}"
                )
            with self.db.session() as session:
                job = session.get(Job, job_id, with_for_update=True, populate_existing=True)
                if job is not None and job.state == JobState.DISPATCHED:
                    launched += self._apply(session, job, status)
        return launched

    def _mounts(self, session: Session, job_id: int) -> tuple[DataMount, ...]:
        """The data sets the job reads, as files of this server's content store."""
        files = self.executors.files
        if files is None:
            return ()
        return tuple(
            DataMount(name, tuple((f.path, str(object_path(files, f.sha256))) for f in entries))
            for name, entries in job_mounts(session, job_id)
        )

    def _apply(self, session: Session, job: Job, status: RunStatus) -> int:
        return apply_status(session, self.catalog, job, status, self.clock())


LOST_MARK = "; queued again"


def _keep_lost(before: str | None, reason: str) -> str:
    """A job that was lost (or timed out, to resume) keeps saying so while it waits again."""
    if before and before.startswith(("lost at ", "timed out at ")) and LOST_MARK in before:
        return f"{before.split(LOST_MARK)[0]}{LOST_MARK}: {reason}"
    return reason
