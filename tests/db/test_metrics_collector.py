"""The database collector's numbers against the rows they count, on both databases."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import select

from fabbrica.services.metrics import (
    DECISION_BUCKETS,
    UNPLACED,
    WAIT_BUCKETS,
    DatabaseCollector,
)
from fabbrica.store.db import Database
from fabbrica.store.models import Agent, Job
from tests.db.metrics_seed import NOW, seed


@pytest.fixture
def registry(db: Database) -> CollectorRegistry:
    with db.session() as session:
        seed(session)
    found = CollectorRegistry(auto_describe=False)
    found.register(DatabaseCollector(db, lambda: NOW))
    return found


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_jobs_by_state_and_factory_are_the_rows(db: Database, registry: CollectorRegistry) -> None:
    with db.read_session() as session:
        rows = Counter(
            (factory or UNPLACED, state)
            for factory, state in session.execute(select(Job.factory_id, Job.state))
        )
    assert rows[("it4lia", "succeeded")] == 2  # the seed is what the test thinks
    for (factory, state), count in rows.items():
        assert value(registry, "fabbrica_jobs", factory=factory, state=state) == count
    assert value(registry, "fabbrica_jobs", factory="lumi-aif", state="running") is None
    assert value(registry, "fabbrica_queue_depth_jobs", factory=UNPLACED) == 4
    assert value(registry, "fabbrica_queue_depth_jobs", factory="it4lia") == 1  # dispatched
    assert value(registry, "fabbrica_queue_depth_jobs", factory="lumi-aif") is None


def test_wait_time_histogram_by_factory(registry: CollectorRegistry) -> None:
    def bucket(factory: str, le: str) -> float | None:
        return value(registry, "fabbrica_job_wait_seconds_bucket", factory=factory, le=le)

    # it4lia started jobs waited 0.5 s, 1 s (inclusive bound), 20 s and 4000 s
    assert [bucket("it4lia", le) for le in ("1.0", "5.0", "15.0", "30.0", "3600.0", "7200.0")] == [
        2, 2, 2, 3, 3, 4,
    ]  # fmt: skip
    assert bucket("it4lia", "+Inf") == 4
    assert value(registry, "fabbrica_job_wait_seconds_count", factory="it4lia") == 4
    assert value(registry, "fabbrica_job_wait_seconds_sum", factory="it4lia") == pytest.approx(
        4021.5, abs=0.01
    )
    assert bucket("lumi-aif", "60.0") == 0 and bucket("lumi-aif", "120.0") == 1
    assert len([b for b in WAIT_BUCKETS if bucket("it4lia", repr(float(b))) is not None]) == len(
        WAIT_BUCKETS
    )
    assert bucket(UNPLACED, "+Inf") is None  # nothing unplaced has started


def test_gpus_and_agent_age_from_the_capacity_reports(registry: CollectorRegistry) -> None:
    assert value(registry, "fabbrica_gpus", factory="it4lia", gpu_model="H100") == 24
    assert value(registry, "fabbrica_gpus_free", factory="it4lia", gpu_model="H100") == 12
    assert value(registry, "fabbrica_gpus", factory="it4lia", gpu_model="A100") == 4
    assert value(registry, "fabbrica_gpus_free", factory="it4lia", gpu_model="A100") == 0
    assert value(registry, "fabbrica_gpus", factory="it4lia", gpu_model="unknown") == 0
    assert value(registry, "fabbrica_gpus", factory="lumi-aif", gpu_model="H100") is None
    assert value(registry, "fabbrica_agent_last_sync_age_seconds", factory="it4lia") == 42
    assert value(registry, "fabbrica_agent_last_sync_age_seconds", factory="lumi-aif") is None


def test_lost_jobs_by_the_factory_that_lost_them(db: Database, registry: CollectorRegistry) -> None:
    # every loss, a counter (the job lumi-aif lost and then ran included)
    assert value(registry, "fabbrica_jobs_lost_total", factory="lumi-aif") == 3
    assert value(registry, "fabbrica_jobs_lost_total", factory="it4lia") == 1
    # the jobs waiting again after a loss, now
    assert value(registry, "fabbrica_jobs_lost_waiting", factory="lumi-aif") == 2
    assert value(registry, "fabbrica_jobs_lost_waiting", factory="it4lia") == 1
    assert value(registry, "fabbrica_jobs_lost", factory="it4lia") is None  # no such gauge
    with db.read_session() as session:
        agents = set(session.scalars(select(Agent.factory_id)))
    for factory in agents - {"lumi-aif", "it4lia"}:  # a factory with an agent counts from 0
        assert value(registry, "fabbrica_jobs_lost_total", factory=factory) == 0
    assert agents - {"lumi-aif", "it4lia"}, agents


def test_a_cache_answers_from_memory_and_reads_anew_in_the_background(db: Database) -> None:
    """With a max age, the first scrape reads the database; later ones are answered from the
    last collection (their age says how old), and once it is older than the max age a new
    one is read in the background (one at a time) for the scrapes after. Too old a
    collection is not served. Without a max age, every scrape reads the database."""
    with db.session() as session:
        seed(session)
    at: list[float] = [1000.0]
    pending: list[Callable[[], None]] = []
    cached, fresh = CollectorRegistry(auto_describe=False), CollectorRegistry(auto_describe=False)
    collector = DatabaseCollector(
        db, lambda: NOW, max_age=5.0, timer=lambda: at[0], background=pending.append
    )
    cached.register(collector)
    fresh.register(DatabaseCollector(db, lambda: NOW))
    queued = {"factory": UNPLACED, "state": "queued"}
    assert value(cached, "fabbrica_jobs", **queued) == 4
    assert value(cached, "fabbrica_metrics_age_seconds") == 0
    with db.session() as session:
        owner = session.execute(select(Job.project_pk, Job.user_id)).first()
        assert owner is not None
        project_pk, user_id = owner
        session.add(
            Job(project_pk=project_pk, user_id=user_id, name="n", spec="{}", state="queued",
                gpus=1, nodes=1, time_limit_s=60, submitted_at=NOW)
        )  # fmt: skip
    at[0] += 4.5
    assert value(cached, "fabbrica_jobs", **queued) == 4  # the same collection
    assert value(cached, "fabbrica_metrics_age_seconds") == 4.5
    assert value(fresh, "fabbrica_jobs", **queued) == 5
    assert pending == []
    at[0] += 10.5  # older than the max age: served, and a new collection is asked for
    assert value(cached, "fabbrica_jobs", **queued) == 4
    assert value(cached, "fabbrica_metrics_age_seconds") == 15
    assert len(pending) == 1  # once, however many scrapes come meanwhile
    pending.pop()()  # the background collection runs
    at[0] += 1
    assert value(cached, "fabbrica_jobs", **queued) == 5
    assert value(cached, "fabbrica_metrics_age_seconds") == 1
    assert pending == []
    at[0] += 1000  # too old to serve: read while the scrape waits
    with db.session() as session:
        session.add(
            Job(project_pk=project_pk, user_id=user_id, name="m", spec="{}", state="queued",
                gpus=1, nodes=1, time_limit_s=60, submitted_at=NOW)
        )  # fmt: skip
    assert value(cached, "fabbrica_jobs", **queued) == 6
    assert value(cached, "fabbrica_metrics_age_seconds") == 0


def test_gpu_hours_in_seconds_by_factory_mode_and_state(registry: CollectorRegistry) -> None:
    def hours(name: str, **labels: str) -> float | None:
        seconds = value(registry, f"fabbrica_allocation_{name}_gpu_seconds", **labels)
        return None if seconds is None else seconds / 3600

    labels = {"factory": "it4lia", "mode": "playground", "state": "active"}
    assert hours("granted", **labels) == 1500
    assert hours("used", **labels) == 250.75
    assert hours("reserved", **labels) == 10
    expired = {"factory": "it4lia", "mode": "fast_lane", "state": "expired"}
    assert hours("used", **expired) == 1999
    lumi = {"factory": "lumi-aif", "mode": "playground", "state": "active"}
    assert hours("granted", **lumi) == 300
    assert hours("granted", factory="lumi-aif", mode="fast_lane", state="active") is None


def test_proposals_and_decision_latency_by_mode(registry: CollectorRegistry) -> None:
    def proposals(factory: str, mode: str, state: str) -> float | None:
        return value(registry, "fabbrica_proposals", factory=factory, mode=mode, state=state)

    assert proposals("it4lia", "playground", "accepted") == 2
    assert proposals("it4lia", "fast_lane", "rejected") == 1
    assert proposals("it4lia", "fast_lane", "submitted") == 1
    assert proposals("lumi-aif", "playground", "draft") == 1

    def bucket(mode: str, le: str) -> float | None:
        return value(registry, "fabbrica_proposal_decision_seconds_bucket", mode=mode, le=le)

    assert [bucket("playground", le) for le in ("1.0", "10.0", "60.0", "+Inf")] == [1, 1, 2, 2]
    assert bucket("fast_lane", "86400.0") == 0 and bucket("fast_lane", "259200.0") == 1
    assert value(registry, "fabbrica_proposal_decision_seconds_count", mode="fast_lane") == 1
    assert value(registry, "fabbrica_proposal_decision_seconds_sum", mode="playground") == (
        pytest.approx(30.5, abs=0.01)
    )
    assert bucket("playground", repr(float(DECISION_BUCKETS[-1]))) == 2


def test_email_outbox_backlog(registry: CollectorRegistry) -> None:
    assert value(registry, "fabbrica_email_outbox_emails", status="pending") == 2
    assert value(registry, "fabbrica_email_outbox_emails", status="failed") == 1
    age = value(registry, "fabbrica_email_outbox_oldest_pending_age_seconds")
    assert age == pytest.approx(30 * 60, abs=0.01)  # the failed one (60 min) is not pending


def test_an_empty_database_answers_zeros_not_errors(db: Database) -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(db, lambda: NOW))
    assert value(registry, "fabbrica_email_outbox_emails", status="pending") == 0
    assert value(registry, "fabbrica_email_outbox_oldest_pending_age_seconds") == 0
    assert value(registry, "fabbrica_jobs", factory=UNPLACED, state="queued") is None
    assert value(registry, "fabbrica_metrics_collect_duration_seconds") is not None
