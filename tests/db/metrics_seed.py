"""A small federation in the database, row by row, for the metrics tests: jobs in every
state on two factories, waits and decision times that fall in known buckets, agents with
capacity, allocations, proposals and an outbox."""

from __future__ import annotations

import datetime as dt
import json

from sqlalchemy.orm import Session

from fabbrica.store.models import (
    Agent,
    Allocation,
    Call,
    Job,
    JobLoss,
    Organisation,
    OutboxEmail,
    Project,
    Proposal,
    User,
)

NOW = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.UTC)


def seconds(n: float) -> dt.timedelta:
    return dt.timedelta(seconds=n)


def seed(session: Session) -> None:
    user = User(email="pi@example.eu", name="PI", role="user", active=True, created_at=NOW)
    session.add(user)
    session.flush()
    org = Organisation(name="O", country="IT", type="startup", created_by=user.id, created_at=NOW)
    session.add(org)
    session.flush()
    project = Project(
        id="FAB-1", title="P", organisation_id=org.id, pi_user_id=user.id, mode="playground",
        created_at=NOW,
    )  # fmt: skip
    session.add(project)
    for call_id, factory, mode in [
        ("it4lia-playground", "it4lia", "playground"),
        ("it4lia-fast-lane", "it4lia", "fast_lane"),
        ("lumi-aif-playground", "lumi-aif", "playground"),
    ]:
        if session.get(Call, call_id) is None:  # seed_calls may have made it (same mode)
            session.add(
                Call(id=call_id, mode=mode, factory_id=factory, state="open",
                     decision="automatic", min_reviews=0, created_at=NOW)
            )  # fmt: skip
    session.flush()
    _proposals(session, project.pk, user.id)
    _allocations(session, project.pk)
    _jobs(session, project.pk, user.id)
    _agents(session, user.id)
    _outbox(session)
    session.flush()


def _proposals(session: Session, project_pk: int, user_id: int) -> None:
    # (call, state, submitted -> decided seconds): decision latencies 0.5 s, 30 s, 2 days
    for call_id, state, took in [
        ("it4lia-playground", "accepted", 0.5),
        ("it4lia-playground", "accepted", 30.0),
        ("it4lia-fast-lane", "rejected", 2 * 86400.0),
        ("it4lia-fast-lane", "submitted", None),
        ("lumi-aif-playground", "draft", None),
    ]:
        submitted = NOW - dt.timedelta(days=3) if state != "draft" else None
        session.add(
            Proposal(
                project_pk=project_pk, call_id=call_id, state=state, gpu_hours=100.0, months=1,
                abstract="a", created_by=user_id, created_at=NOW - dt.timedelta(days=4),
                submitted_at=submitted,
                decided_at=submitted + seconds(took) if submitted and took is not None else None,
            )
        )  # fmt: skip


def _allocations(session: Session, project_pk: int) -> None:
    for call_id, factory, state, granted, used, reserved in [
        ("it4lia-playground", "it4lia", "active", 1000.0, 250.5, 10.0),
        ("it4lia-playground", "it4lia", "active", 500.0, 0.25, 0.0),
        ("it4lia-fast-lane", "it4lia", "expired", 2000.0, 1999.0, 0.0),
        ("lumi-aif-playground", "lumi-aif", "active", 300.0, 12.0, 2.0),
    ]:
        session.add(
            Allocation(
                project_pk=project_pk, call_id=call_id, factory_id=factory,
                granted_gpu_hours=granted, used_gpu_hours=used, reserved_gpu_hours=reserved,
                valid_from=NOW - dt.timedelta(days=10), valid_until=NOW + dt.timedelta(days=20),
                state=state, final_report_due=NOW + dt.timedelta(days=50), created_at=NOW,
            )
        )  # fmt: skip


# (factory, state, wait in seconds until started or None, reason)
JOBS: list[tuple[str | None, str, float | None, str | None]] = [
    ("it4lia", "succeeded", 0.5, None),
    ("it4lia", "succeeded", 20.0, None),
    ("it4lia", "failed", 4000.0, None),
    ("it4lia", "running", 1.0, None),
    ("it4lia", "dispatched", None, None),
    ("lumi-aif", "succeeded", 90.0, None),
    ("lumi-aif", "cancelled", None, None),
    (None, "queued", None, "waiting for 8 GPUs"),
    (None, "queued", None, "lost at lumi-aif; queued again: waiting for 8 GPUs"),
    (None, "queued", None, "lost at lumi-aif; queued again"),
    (None, "queued", None, "lost at it4lia; queued again: no partition fits"),
]


def _jobs(session: Session, project_pk: int, user_id: int) -> None:
    made = []
    for factory, state, wait, reason in JOBS:
        submitted = NOW - dt.timedelta(hours=5)
        made.append(
            Job(
                project_pk=project_pk, user_id=user_id, name="j", spec="{}", state=state,
                reason=reason, gpus=1, nodes=1, time_limit_s=3600, factory_id=factory,
                submitted_at=submitted,
                started_at=submitted + seconds(wait) if wait is not None else None,
            )
        )  # fmt: skip
    session.add_all(made)
    session.flush()
    # every loss: the three waiting again, and lumi-aif's succeeded job, lost once before
    for job, factory in ((made[8], "lumi-aif"), (made[9], "lumi-aif"), (made[10], "it4lia"),
                         (made[5], "lumi-aif")):  # fmt: skip
        session.add(JobLoss(job_id=job.id, factory_id=factory, lost_at=NOW - seconds(60)))


def _agents(session: Session, user_id: int) -> None:
    capacity = [
        {"partition": "booster", "gpu_model": "H100", "total_gpus": 16, "free_gpus": 4},
        {"partition": "booster2", "gpu_model": "H100", "total_gpus": 8, "free_gpus": 8},
        {"partition": "old", "gpu_model": "A100", "total_gpus": 4, "free_gpus": 0},
        {"partition": "cpu", "gpu_model": None, "total_gpus": 0, "free_gpus": 0},
    ]
    session.add(
        Agent(factory_id="it4lia", user_id=user_id, capacity=json.dumps(capacity),
              last_seen_at=NOW - seconds(42))
    )  # fmt: skip
    session.add(Agent(factory_id="lumi-aif", user_id=user_id, capacity="[]", last_seen_at=None))
    session.add(Agent(factory_id="jaif", user_id=user_id, capacity="[]", last_seen_at=None))


def _outbox(session: Session) -> None:
    for minutes_ago, sent, attempts in [
        (30, False, 0),
        (10, False, 2),
        (5, True, 1),
        (60, False, 5),
    ]:
        created = NOW - dt.timedelta(minutes=minutes_ago)
        session.add(
            OutboxEmail(to_address="a@b.eu", subject="s", body="b", kind="decision",
                        created_at=created, sent_at=created if sent else None, attempts=attempts)
        )  # fmt: skip
