"""Federation metrics for Prometheus, read from the database when `/metrics` is scraped.

`DatabaseCollector` is a prometheus_client custom collector: a collection runs a few GROUP
BY queries in one read-only transaction (on SQLite it takes no write lock) and turns their
rows into metric families; with FABBRICA_METRICS_CACHE_SECONDS a scrape is answered from
the last collection and a newer one is read in the background. Aggregation happens in SQL,
histograms included: a job's wait and a proposal's decision time are put in their bucket by
the query (width_bucket on PostgreSQL, CASEs elsewhere), so the Python side handles one row
per (label set, bucket), never one per job. Label sets are bounded: factories, GPU models,
access modes, states; never a user, project or job id.

docs/observability.md lists every metric.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Float,
    Integer,
    Interval,
    case,
    cast,
    extract,
    func,
    literal,
    select,
)
from sqlalchemy.orm import Session

from fabbrica.core.jobs import JobState
from fabbrica.services.notify import MAX_ATTEMPTS
from fabbrica.store.db import Database
from fabbrica.store.models import (
    Agent,
    Allocation,
    Call,
    Job,
    JobLoss,
    OutboxEmail,
    Proposal,
)

UNPLACED = "unplaced"  # the factory label of jobs the scheduler has not placed (yet, or again)
UNKNOWN_MODEL = "unknown"  # the gpu_model label of a partition that reports no model
# bucket bounds, in seconds (upper bounds, inclusive as Prometheus' `le`)
WAIT_BUCKETS: tuple[float, ...] = (
    1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400, 259200, 604800,
)  # fmt: skip
DECISION_BUCKETS: tuple[float, ...] = (
    1, 10, 60, 300, 900, 3600, 14400, 86400, 259200, 604800, 1209600, 2592000, 5184000, 7776000,
)  # fmt: skip
SECONDS_PER_HOUR = 3600.0
WAITING = (JobState.QUEUED.value, JobState.DISPATCHED.value)  # not started: the queue


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Span:
    """`later - earlier` as SQL, in the form each database compares fastest: an interval on
    PostgreSQL (no per-row conversion to seconds), seconds on SQLite (julianday's doubles,
    rounded to the millisecond: they carry about 50 microseconds of noise)."""

    later: Any
    earlier: Any
    dialect: str

    def value(self) -> ColumnElement[Any]:
        if self.dialect == "sqlite":
            days = func.julianday(self.later) - func.julianday(self.earlier)
            return func.round(days * 86400.0, 3)
        interval: ColumnElement[Any] = self.later - self.earlier
        return interval

    def bound(self, seconds: float) -> ColumnElement[Any]:
        if self.dialect == "sqlite":
            return literal(float(seconds), Float())
        return literal(dt.timedelta(seconds=seconds), Interval())

    def total_seconds(self) -> ColumnElement[float]:
        """The sum over a group, in seconds (converted once per group on PostgreSQL)."""
        if self.dialect == "sqlite":
            return cast(func.sum(self.value()), Float)
        return cast(extract("epoch", func.sum(self.later - self.earlier)), Float)

    def bucket(self, bounds: Sequence[float]) -> ColumnElement[int]:
        """The index of the first bound the span is at most, len(bounds) past the last.

        On PostgreSQL, width_bucket's binary search (in C) over the negated bounds, which
        counts the bounds at least the span (Prometheus' `le` is inclusive; width_bucket
        counts thresholds at most its operand); elsewhere a binary search of CASEs, so
        each row is compared about log2(len(bounds)) times."""
        span = self.value()
        if self.dialect == "postgresql":
            negated = [dt.timedelta(seconds=-b) for b in reversed(bounds)]
            minus: ColumnElement[Any] = self.earlier - self.later  # the span, negated
            at_least = func.width_bucket(minus, literal(negated, ARRAY(Interval())))
            return len(bounds) - at_least

        def search(low: int, high: int) -> ColumnElement[int]:
            if low == high:
                return literal(low, Integer())
            middle = (low + high) // 2
            return case(
                (span <= self.bound(bounds[middle]), search(low, middle)),
                else_=search(middle + 1, high),
            )

        return search(0, len(bounds))


@dataclass(frozen=True)
class Histogram:
    """One label set of a histogram: cumulative counts per bound (+Inf last), and the sum."""

    labels: tuple[str, ...]
    buckets: list[tuple[str, float]]
    total: float


def cumulate(
    rows: Iterable[Sequence[Any]], bounds: Sequence[float]
) -> dict[tuple[str, ...], Histogram]:
    """Histograms from rows of (labels..., bucket index, count, sum of seconds)."""
    counts: dict[tuple[str, ...], list[int]] = {}
    sums: dict[tuple[str, ...], float] = {}
    for *labels, index, count, seconds in rows:
        key = tuple(str(label) for label in labels)
        counts.setdefault(key, [0] * (len(bounds) + 1))[int(index)] += int(count)
        sums[key] = sums.get(key, 0.0) + float(seconds or 0.0)
    found = {}
    for key, per_bucket in counts.items():
        running, buckets = 0, []
        for bound, count in zip((*(_le(b) for b in bounds), "+Inf"), per_bucket, strict=True):
            running += count
            buckets.append((bound, float(running)))
        found[key] = Histogram(key, buckets, sums[key])
    return found


def _le(bound: float) -> str:
    return repr(float(bound))


class DatabaseCollector(Collector):
    """Every federation metric, read from `db` at each scrape; `clock` gives `now` (the
    ages). Registered in one app's own CollectorRegistry, never the global one.

    With `max_age` > 0 (seconds, FABBRICA_METRICS_CACHE_SECONDS) a scrape never waits for
    the database once a collection exists: within `max_age` of it the scrape gets it again;
    later (up to `STALE_AFTER` seconds) it gets it too, and a collection starts in the
    background (`background` runs it; one at a time), which the next scrape gets. So with
    Prometheus scraping every 15 s, each scrape is answered from memory with the figures
    read after the scrape before (their age is exported as `fabbrica_metrics_age_seconds`),
    and the database is read once per scrape at most, as without the cache. The first
    scrape, and one after a long pause, read the database while they wait. With
    `max_age` 0 every scrape reads the database."""

    def __init__(
        self,
        db: Database,
        clock: Callable[[], dt.datetime],
        max_age: float = 0.0,
        timer: Callable[[], float] = time.monotonic,
        background: Callable[[Callable[[], None]], None] | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.max_age = max_age
        self.timer = timer
        self.background = background or _in_a_thread
        self._lock = threading.Lock()  # one collection at a time
        self._state = threading.Lock()  # guards _cached and _refreshing
        self._cached: tuple[float, list[Metric], float] | None = None  # taken, families, took
        self._refreshing = False

    def describe(self) -> list[Metric]:
        return []  # nothing to query at registration: collect() runs only when scraped

    def collect(self) -> Iterator[Metric]:
        families, took, age = self._families()
        duration = GaugeMetricFamily(
            "fabbrica_metrics_collect_duration_seconds",
            "How long the database queries behind this scrape's figures took.",
        )
        duration.add_metric([], took)
        cached = GaugeMetricFamily(
            "fabbrica_metrics_age_seconds",
            "Age of this scrape's database figures (0: read for this scrape; with "
            "FABBRICA_METRICS_CACHE_SECONDS, the time since the collection served).",
        )
        cached.add_metric([], age)
        yield from families
        yield duration
        yield cached

    def _families(self) -> tuple[list[Metric], float, float]:
        """The families, how long collecting them took, and their age (seconds)."""
        if self.max_age <= 0:
            families, took = self._read()
            return families, took, 0.0
        with self._state:
            cached, now = self._cached, self.timer()
            age = now - cached[0] if cached is not None else STALE_AFTER
            refresh = age < STALE_AFTER and age >= self.max_age and not self._refreshing
            self._refreshing = self._refreshing or refresh
        if cached is not None and age < STALE_AFTER:
            if refresh:
                self.background(self._refresh)
            taken, families, took = cached
            return families, took, now - taken
        with self._lock:  # none yet, or too old: read now (once for concurrent scrapes)
            with self._state:
                cached, now = self._cached, self.timer()
            if cached is not None and now - cached[0] < self.max_age:
                return cached[1], cached[2], now - cached[0]
            taken = self.timer()
            families, took = self._read()
            with self._state:
                self._cached = (taken, families, took)
            return families, took, 0.0

    def _refresh(self) -> None:
        try:
            with self._lock:
                taken = self.timer()
                families, took = self._read()
                with self._state:
                    self._cached = (taken, families, took)
        except Exception:  # the database away: the old figures stay; the next scrape retries
            log.warning("reading the metrics in the background failed", exc_info=True)
        finally:
            with self._state:
                self._refreshing = False

    def _read(self) -> tuple[list[Metric], float]:
        began = time.perf_counter()
        with self.db.read_session() as session:
            families = collect_families(session, self.db.backend, self.clock())
        return families, time.perf_counter() - began


STALE_AFTER = 120.0  # seconds: an older collection is not served; the scrape reads anew


def _in_a_thread(work: Callable[[], None]) -> None:
    threading.Thread(target=work, name="metrics-refresh", daemon=True).start()


def collect_families(session: Session, dialect: str, now: dt.datetime) -> list[Metric]:
    """Every metric family the database answers, at `now`."""
    return [
        *_jobs(session, dialect),
        *_capacity(session, now),
        *_lost(session),
        *_allocations(session),
        _proposals(session),
        _decision_latency(session, dialect),
        *_outbox(session, now),
    ]


def _factory(value: str | None) -> str:
    return value or UNPLACED


def _jobs(session: Session, dialect: str) -> list[Metric]:
    """Jobs by factory and state, the queue, and the wait histogram: one scan of the jobs
    table, grouped by factory, state and wait bucket (-1: not started)."""
    jobs = GaugeMetricFamily(
        "fabbrica_jobs",
        f"Jobs by state and factory ({UNPLACED}: not placed on a factory).",
        labels=["factory", "state"],
    )
    queue = GaugeMetricFamily(
        "fabbrica_queue_depth_jobs",
        f"Jobs waiting to start (queued, or dispatched and not running yet), by factory "
        f"({UNPLACED}: not placed yet).",
        labels=["factory"],
    )
    wait = HistogramMetricFamily(
        "fabbrica_job_wait_seconds",
        "Time from submission to start of the jobs that started, by factory.",
        labels=["factory"],
    )
    span = Span(Job.started_at, Job.submitted_at, dialect)
    index = case((Job.started_at.is_(None), -1), else_=span.bucket(WAIT_BUCKETS)).label("bucket")
    query = select(Job.factory_id, Job.state, index, func.count(), span.total_seconds()).group_by(
        Job.factory_id, Job.state, index
    )
    by_state: dict[tuple[str, str], int] = {}
    waiting: dict[str, int] = {}
    started: list[tuple[str, int, int, float]] = []
    for factory_id, state, bucket, count, seconds in session.execute(query):
        factory = _factory(factory_id)
        by_state[(factory, state)] = by_state.get((factory, state), 0) + count
        if state in WAITING:
            waiting[factory] = waiting.get(factory, 0) + count
        if bucket >= 0:
            started.append((factory, bucket, count, seconds))
    for (factory, state), count in sorted(by_state.items()):
        jobs.add_metric([factory, state], count)
    for factory, count in sorted(waiting.items()):
        queue.add_metric([factory], count)
    for key, histogram in sorted(cumulate(started, WAIT_BUCKETS).items()):
        wait.add_metric(list(key), histogram.buckets, histogram.total)
    return [jobs, queue, wait]


def _capacity(session: Session, now: dt.datetime) -> list[Metric]:
    total = GaugeMetricFamily(
        "fabbrica_gpus",
        "GPUs at a factory, by GPU model, as its site agent last reported.",
        labels=["factory", "gpu_model"],
    )
    free = GaugeMetricFamily(
        "fabbrica_gpus_free",
        "Free GPUs at a factory, by GPU model, as its site agent last reported.",
        labels=["factory", "gpu_model"],
    )
    age = GaugeMetricFamily(
        "fabbrica_agent_last_sync_age_seconds",
        "Seconds since a factory's site agent last synced (agents that never synced: absent).",
        labels=["factory"],
    )
    query = select(Agent.factory_id, Agent.capacity, Agent.last_seen_at).order_by(Agent.factory_id)
    for factory, capacity, last_seen in session.execute(query):  # one row per factory
        by_model: dict[str, list[int]] = {}
        for partition in _partitions(capacity):
            model = str(partition.get("gpu_model") or UNKNOWN_MODEL)
            counts = by_model.setdefault(model, [0, 0])
            counts[0] += int(partition.get("total_gpus") or 0)
            counts[1] += int(partition.get("free_gpus") or 0)
        for model, (gpus, idle) in sorted(by_model.items()):
            total.add_metric([factory, model], gpus)
            free.add_metric([factory, model], idle)
        if last_seen is not None:
            age.add_metric([factory], max(0.0, (now - last_seen).total_seconds()))
    return [total, free, age]


def _partitions(capacity: str | None) -> list[dict[str, Any]]:
    try:
        found = json.loads(capacity or "[]")
    except ValueError:
        return []
    return [p for p in found if isinstance(p, dict)] if isinstance(found, list) else []


def _lost(session: Session) -> list[Metric]:
    """Every loss (a JobLoss row each time a factory lost a job), and the jobs waiting again
    after one: requeue_lost writes "lost at <factory>; queued again" into the reason, which
    dispatch keeps while it waits."""
    losses = CounterMetricFamily(
        "fabbrica_jobs_lost",
        "Times a factory lost a job it was running (site gone quiet, lease run out, or no "
        "trace of the run) and the job was queued again, by that factory.",
        labels=["factory"],
    )
    # a factory with a site agent counts from 0, so that its first loss is an increase
    counted = dict.fromkeys(session.scalars(select(Agent.factory_id)), 0)
    for factory, count in session.execute(
        select(JobLoss.factory_id, func.count()).group_by(JobLoss.factory_id)
    ):
        counted[factory] = count
    for factory, count in sorted(counted.items()):
        losses.add_metric([factory], count)
    waiting = GaugeMetricFamily(
        "fabbrica_jobs_lost_waiting",
        "Jobs queued again after the factory running them lost them, by that factory, while "
        "they wait.",
        labels=["factory"],
    )
    query = (
        select(Job.reason, func.count())
        .where(Job.state == JobState.QUEUED.value, Job.reason.like("lost at %"))
        .group_by(Job.reason)
    )
    counts: dict[str, int] = {}
    for reason, count in session.execute(query):
        factory = str(reason).removeprefix("lost at ").split(";", 1)[0].split(":", 1)[0]
        counts[factory] = counts.get(factory, 0) + count
    for factory, count in sorted(counts.items()):
        waiting.add_metric([factory], count)
    return [losses, waiting]


def _allocations(session: Session) -> list[Metric]:
    """GPU-hours in Prometheus' base unit: GPU-seconds (3600 a GPU-hour)."""
    names = {
        "granted": "GPU-seconds granted (3600 a GPU-hour) to",
        "used": "GPU-seconds (3600 a GPU-hour) charged to",
        "reserved": "GPU-seconds (3600 a GPU-hour) reserved by running jobs on",
    }
    families = {
        key: GaugeMetricFamily(
            f"fabbrica_allocation_{key}_gpu_seconds",
            f"{what} allocations, by factory, access mode and allocation state.",
            labels=["factory", "mode", "state"],
        )
        for key, what in names.items()
    }
    query = (
        select(
            Allocation.factory_id,
            Call.mode,
            Allocation.state,
            func.sum(Allocation.granted_gpu_hours),
            func.sum(Allocation.used_gpu_hours),
            func.sum(Allocation.reserved_gpu_hours),
        )
        .join(Call, Call.id == Allocation.call_id)
        .group_by(Allocation.factory_id, Call.mode, Allocation.state)
    )
    for factory, mode, state, granted, used, reserved in session.execute(query):
        labels = [factory, mode, state]
        families["granted"].add_metric(labels, float(granted or 0) * SECONDS_PER_HOUR)
        families["used"].add_metric(labels, float(used or 0) * SECONDS_PER_HOUR)
        families["reserved"].add_metric(labels, float(reserved or 0) * SECONDS_PER_HOUR)
    return list(families.values())


def _proposals(session: Session) -> Metric:
    family = GaugeMetricFamily(
        "fabbrica_proposals",
        "Proposals by state, access mode and the factory of their call.",
        labels=["factory", "mode", "state"],
    )
    query = (
        select(Call.factory_id, Call.mode, Proposal.state, func.count())
        .join(Call, Call.id == Proposal.call_id)
        .group_by(Call.factory_id, Call.mode, Proposal.state)
    )
    for factory, mode, state, count in session.execute(query):
        family.add_metric([factory, mode, state], count)
    return family


def _decision_latency(session: Session, dialect: str) -> Metric:
    span = Span(Proposal.decided_at, Proposal.submitted_at, dialect)
    index = span.bucket(DECISION_BUCKETS).label("bucket")
    query = (
        select(Call.mode, index, func.count(), span.total_seconds())
        .join(Call, Call.id == Proposal.call_id)
        .where(Proposal.decided_at.is_not(None), Proposal.submitted_at.is_not(None))
        .group_by(Call.mode, index)
    )
    family = HistogramMetricFamily(
        "fabbrica_proposal_decision_seconds",
        "Time from a proposal's submission to its decision, by access mode.",
        labels=["mode"],
    )
    for key, histogram in sorted(cumulate(session.execute(query), DECISION_BUCKETS).items()):
        family.add_metric(list(key), histogram.buckets, histogram.total)
    return family


def _outbox(session: Session, now: dt.datetime) -> list[Metric]:
    backlog = GaugeMetricFamily(
        "fabbrica_email_outbox_emails",
        f"Unsent emails in the outbox: pending (to be tried again), or failed (given up "
        f"after {MAX_ATTEMPTS} attempts).",
        labels=["status"],
    )
    oldest = GaugeMetricFamily(
        "fabbrica_email_outbox_oldest_pending_age_seconds",
        "Age of the oldest pending email (0 when none is pending).",
    )
    failed = OutboxEmail.attempts >= MAX_ATTEMPTS
    query = select(
        func.count(case((~failed, 1))),
        func.count(case((failed, 1))),
        func.min(case((~failed, OutboxEmail.created_at))),
    ).where(OutboxEmail.sent_at.is_(None))
    pending, given_up, first = session.execute(query).one()
    backlog.add_metric(["pending"], pending)
    backlog.add_metric(["failed"], given_up)
    if isinstance(first, str):  # a MIN over a CASE loses the column's type on SQLite
        first = dt.datetime.fromisoformat(first).replace(tzinfo=dt.UTC)
    age = (now - first).total_seconds() if first is not None else 0.0
    oldest.add_metric([], max(0.0, age))
    return [backlog, oldest]
