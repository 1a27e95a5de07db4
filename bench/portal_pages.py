"""Server time of every portal page on PostgreSQL with a federation's worth of rows.

Fills a scratch database with 10,000 jobs, 1,000 projects (of 200 organisations) and 2,000
proposals (with their reviews and the allocations of the accepted ones, the usage of the
jobs that ran, a site agent per factory), then asks each page of each role many times
through the real app in process (ASGI, no network: the time is the server's) and prints
the median and the 95th percentile per page. The member is the PI of a busy project (a
fifth of the jobs) and a member of 19 more; the reviewer has 100 proposals assigned; the
operator operates it4lia; the admin sees everything. Goal: every page's p95 under 150 ms.

    uv run python bench/portal_pages.py [--jobs 10000] [--projects 1000]
        [--proposals 2000] [--runs 40] [--sqlite]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import re
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from fastapi.testclient import TestClient
from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.engine import make_url

from fabbrica.api.app import create_app
from fabbrica.api.deps import AppContext
from fabbrica.catalog.loader import load_catalog
from fabbrica.portal import install_portal
from fabbrica.services import portal_sessions
from fabbrica.services.access.calls import seed_calls
from fabbrica.store.db import Database, normalise_url
from fabbrica.store.migrate import upgrade
from fabbrica.store.models import (
    Agent,
    Allocation,
    Call,
    Job,
    Organisation,
    OrganisationMember,
    OutboxEmail,
    Project,
    ProjectMember,
    Proposal,
    Review,
    UsageRecord,
    User,
)
from fabbrica.store.models.identity import OperatorFactory

PG_ADMIN = os.environ.get(
    "FABBRICA_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
GOAL_MS = 150.0
STATES = (["succeeded"] * 60 + ["failed"] * 10 + ["cancelled"] * 5 + ["timed_out"] * 2
          + ["running"] * 10 + ["dispatched"] * 5 + ["queued"] * 8)  # fmt: skip
MEMBER, REVIEWER, OPERATOR, ADMIN = (
    "member@bench.eu", "reviewer@bench.eu", "operator@bench.eu", "admin@bench.eu"
)  # fmt: skip


def _fill(
    db: Database, jobs: int, projects: int, proposals: int, rng: random.Random
) -> dict[str, str]:
    """The rows; returns the ids the pages of one object are asked with."""
    catalog = load_catalog()
    with db.session() as session:
        seed_calls(session, catalog, NOW)
    with db.engine.begin() as conn:
        people = [dict(email=e, name=e.split("@")[0], role=r, active=True, created_at=NOW)
                  for e, r in ((MEMBER, "user"), (REVIEWER, "reviewer"),
                               (OPERATOR, "operator"), (ADMIN, "admin"))]  # fmt: skip
        people += [dict(email=f"pi{n}@bench.eu", name=f"PI {n}", role="user", active=True,
                        created_at=NOW) for n in range(200)]  # fmt: skip
        conn.execute(insert(User), people)
        ids = dict(conn.execute(select(User.email, User.id)).all())
        member, reviewer = ids[MEMBER], ids[REVIEWER]
        conn.execute(insert(OperatorFactory), [dict(user_id=ids[OPERATOR], factory_id="it4lia")])
        pis = [ids[f"pi{n}@bench.eu"] for n in range(200)]
        conn.execute(insert(Organisation), [dict(
            name=f"Organisation {n}", country=rng.choice(["IT", "DE", "FR", "ES", "FI", "PL"]),
            type=rng.choice(["startup", "sme", "large_industry", "academia"]), sector="space",
            created_by=pis[n], created_at=NOW,
        ) for n in range(200)])  # fmt: skip
        orgs = [o for (o,) in conn.execute(select(Organisation.id).order_by(Organisation.id))]
        conn.execute(insert(OrganisationMember), [
            dict(organisation_id=orgs[n], user_id=pis[n], role="admin") for n in range(200)
        ] + [dict(organisation_id=orgs[0], user_id=member, role="admin")])  # fmt: skip
        conn.execute(insert(Project), [dict(
            id=f"FAB-BENCH-{n:05d}", title=f"Project {n}", organisation_id=orgs[n % 200],
            pi_user_id=member if n == 0 else pis[n % 200], mode="playground", created_at=NOW,
        ) for n in range(projects)])  # fmt: skip
        pks = [p for (p,) in conn.execute(select(Project.pk).order_by(Project.pk))]
        conn.execute(
            insert(ProjectMember),
            [
                dict(
                    project_pk=pks[n],
                    user_id=member if n == 0 else pis[n % 200],
                    role="pi",
                    added_at=NOW,
                )
                for n in range(projects)
            ]
            + [
                dict(project_pk=pks[n], user_id=member, role="member", added_at=NOW)
                for n in range(1, 20)
            ],
        )
        call_rows = conn.execute(select(Call.id, Call.factory_id).order_by(Call.id))
        calls: list[tuple[str, str]] = [(c, f) for c, f in call_rows]
        rows = []
        for i in range(proposals):
            call_id, _ = calls[i % len(calls)]
            submitted = NOW - dt.timedelta(days=rng.uniform(1, 300))
            state = ("in_review", "submitted", "accepted", "accepted", "rejected")[i % 5]
            if i == projects:  # the member's busy project's second: its allocation
                state = "accepted"
            decided = state in ("accepted", "rejected")
            rows.append(dict(
                project_pk=pks[i % projects], call_id=call_id, state=state,
                gpu_hours=float(rng.randrange(100, 50000)), months=6, abstract="An abstract",
                created_by=pis[i % 200], created_at=submitted, submitted_at=submitted,
                decided_at=submitted + dt.timedelta(days=3) if decided else None,
                decided_gpu_hours=1000.0 if state == "accepted" else None,
                auto_decided=False,
            ))  # fmt: skip
        conn.execute(insert(Proposal), rows)
        found = conn.execute(select(Proposal.id, Proposal.project_pk, Proposal.call_id,
                                    Proposal.state, Proposal.submitted_at)).all()  # fmt: skip
        factory_of = dict(calls)
        assigned = [p for p in found if p.state == "in_review"][:100]
        conn.execute(insert(Review), [dict(
            proposal_id=p.id, reviewer_id=reviewer, state="assigned" if n % 2 else "submitted",
            score=None if n % 2 else 4, comment=None if n % 2 else "fine", assigned_at=NOW,
            submitted_at=None if n % 2 else NOW,
        ) for n, p in enumerate(assigned)])  # fmt: skip
        conn.execute(insert(Allocation), [dict(
            project_pk=p.project_pk, proposal_id=p.id, call_id=p.call_id,
            factory_id=factory_of[p.call_id], granted_gpu_hours=10_000.0,
            used_gpu_hours=0.0, reserved_gpu_hours=0.0, valid_from=p.submitted_at,
            valid_until=p.submitted_at + dt.timedelta(days=365), state="active",
            final_report_due=p.submitted_at + dt.timedelta(days=400), created_at=p.submitted_at,
        ) for p in found if p.state == "accepted"])  # fmt: skip
        allocation_of = dict(conn.execute(select(Allocation.project_pk, Allocation.id)).all())
        factories = sorted({f for _, f in calls})
        job_rows = []
        for i in range(jobs):
            # a fifth of the jobs are the member's busy project's, the rest spread out
            pk = pks[0] if i % 5 == 0 else pks[i % projects]
            state = rng.choice(STATES)
            submitted = NOW - dt.timedelta(seconds=rng.uniform(0, 60 * 86400))
            ran = state in ("succeeded", "failed", "timed_out")
            job_rows.append(dict(
                project_pk=pk, user_id=member if pk == pks[0] else pis[0], name=f"job-{i}",
                spec="{}", state=state, gpus=rng.choice((1, 2, 4, 8)), nodes=1,
                time_limit_s=3600, factory_id=None if state == "queued" else rng.choice(factories),
                allocation_id=allocation_of.get(pk), reserved_gpu_hours=0.0,
                gpu_hours=rng.uniform(0.1, 2) if ran else None, cancel_requested=False,
                submitted_at=submitted, started_at=submitted if ran else None,
                ended_at=submitted + dt.timedelta(hours=1) if ran else None,
                reason="waiting for GPUs" if state == "queued" else None,
            ))  # fmt: skip
        conn.execute(insert(Job), job_rows)
        charged = conn.execute(select(Job.id, Job.allocation_id, Job.gpus, Job.gpu_hours,
                                      Job.ended_at, Job.factory_id)
                               .where(Job.gpu_hours.is_not(None),
                                      Job.allocation_id.is_not(None))).all()  # fmt: skip
        conn.execute(insert(UsageRecord), [dict(
            job_id=j.id, allocation_id=j.allocation_id, gpus=j.gpus, elapsed_s=3600.0,
            gpu_hours=j.gpu_hours, created_at=j.ended_at, factory_id=j.factory_id,
        ) for j in charged])  # fmt: skip
        conn.execute(text(
            "UPDATE allocations SET used_gpu_hours = (SELECT COALESCE(SUM(gpu_hours), 0) "
            "FROM usage_records WHERE usage_records.allocation_id = allocations.id)"
        ))  # fmt: skip
        conn.execute(insert(Agent), [dict(
            factory_id=f, user_id=ids[ADMIN], backend="slurm", capabilities="[]",
            last_seen_at=NOW,
            capacity='[{"partition": "p", "gpu_model": "H100", "total_gpus": 512, '
                     '"free_gpus": 100, "queued": 3}]',
        ) for f in factories])  # fmt: skip
        busy = select(Job.id).where(Job.project_pk == pks[0])
        member_job = conn.execute(busy).scalars().first()
        in_review = next(p for p in found if p.state == "in_review")
        at_it4lia = next(p for p in found if factory_of[p.call_id] == "it4lia"
                         and p.state in ("in_review", "submitted"))  # fmt: skip
        it4lia_allocation = conn.execute(
            select(Allocation.id).where(Allocation.factory_id == "it4lia")
        ).scalars().first()  # fmt: skip
        member_proposal = next(p for p in found if p.project_pk == pks[0])
    return {
        "project": "FAB-BENCH-00000",
        "org": str(orgs[0]),
        "job": str(member_job),
        "proposal": str(member_proposal.id),
        "allocation": str(allocation_of.get(pks[0], "")),
        "review": str(in_review.id),
        "operate_proposal": str(at_it4lia.id),
        "operate_allocation": str(it4lia_allocation),
    }


def _signed_in(app: object, db: Database, email: str) -> TestClient:
    client = TestClient(app)  # type: ignore[arg-type]
    with db.session() as session:
        portal_sessions.send_link(session, email, base_url="http://testserver", now=NOW)
    with db.session() as session:
        body = session.scalars(
            select(OutboxEmail.body).where(OutboxEmail.to_address == email)
            .order_by(OutboxEmail.id.desc())
        ).first()  # fmt: skip
    found = re.search(r"/sign-in/(\S+)", body or "")
    assert found is not None, body
    assert client.get(f"/sign-in/{found[1]}", follow_redirects=False).status_code == 303
    return client


def _pages(ids: dict[str, str]) -> list[tuple[str, str]]:
    return [
        ("anyone", "/"), ("anyone", "/factories/it4lia"), ("anyone", "/sign-in"),
        ("member", "/projects"), ("member", f"/projects/{ids['project']}"),
        ("member", f"/organisations/{ids['org']}"), ("member", f"/proposals/{ids['proposal']}"),
        ("member", "/allocations"), ("member", f"/allocations/{ids['allocation']}"),
        ("member", "/jobs"), ("member", f"/jobs/{ids['job']}"), ("member", "/notices"),
        ("member", "/usage"), ("member", "/usage?bucket=day"), ("member", "/apply"),
        ("member", "/calls/it4lia-playground/apply"), ("member", "/account"),
        ("reviewer", "/review"), ("reviewer", f"/review/{ids['review']}"),
        ("operator", "/operate"), ("operator", f"/operate/proposals/{ids['operate_proposal']}"),
        ("operator", "/operate/calls"), ("operator", "/operate/calls/it4lia-large-scale"),
        ("operator", "/operate/allocations"),
        ("operator", f"/operate/allocations/{ids['operate_allocation']}"),
        ("operator", "/operate/agents"),
        ("admin", "/operate"), ("admin", "/operate/allocations"), ("admin", "/dashboard"),
    ]  # fmt: skip


Row = tuple[str, str, float, float, int]  # role, page, median ms, p95 ms, bytes


def bench(url: str, jobs: int, projects: int, proposals: int, runs: int) -> list[Row]:
    db = Database(url)
    upgrade(db.engine)
    ids = _fill(db, jobs, projects, proposals, random.Random(11))
    if db.backend == "postgresql":
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))  # as autovacuum would, after a load
    app = create_app(AppContext(db=db, catalog=load_catalog(), clock=lambda: NOW))
    install_portal(app)
    clients = {"anyone": TestClient(app)}
    for role, email in (("member", MEMBER), ("reviewer", REVIEWER), ("operator", OPERATOR),
                        ("admin", ADMIN)):  # fmt: skip
        clients[role] = _signed_in(app, db, email)
    results = []
    for role, path in _pages(ids):
        client = clients[role]
        first = client.get(path)  # warm: connections, compiled templates and statements
        assert first.status_code == 200, (role, path, first.status_code, first.text[:300])
        times = []
        for _ in range(runs):
            began = time.perf_counter()
            response = client.get(path)
            times.append((time.perf_counter() - began) * 1000)
            assert response.status_code == 200
        p95 = statistics.quantiles(times, n=20, method="inclusive")[18]
        results.append((role, path, statistics.median(times), p95, len(first.content)))
    for client in clients.values():
        client.close()
    db.dispose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--projects", type=int, default=1_000)
    parser.add_argument("--proposals", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=40, help="requests per page")
    parser.add_argument("--sqlite", action="store_true", help="also on SQLite")
    args = parser.parse_args()
    admin = create_engine(normalise_url(PG_ADMIN), isolation_level="AUTOCOMMIT")
    name = f"fabbrica_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    table = Table(
        title=f"Portal pages, server time over {args.runs} requests each: {args.jobs:,} jobs, "
        f"{args.projects:,} projects, {args.proposals:,} proposals; load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; goal p95 < {GOAL_MS:g} ms"
    )
    for column in ("database", "role", "page", "median ms", "p95 ms", "KiB", "p95 < goal"):
        table.add_column(column, justify="left" if column in ("role", "page") else "right")

    def add(database: str, rows: list[Row]) -> None:
        for role, path, median, p95, size in rows:
            table.add_row(database, role, path, f"{median:.1f}", f"{p95:.1f}",
                          f"{size / 1024:.0f}", "yes" if p95 < GOAL_MS else "NO")  # fmt: skip

    sizes = (args.jobs, args.projects, args.proposals, args.runs)
    try:
        url = make_url(normalise_url(PG_ADMIN)).set(database=name)
        add("postgresql", bench(url.render_as_string(False), *sizes))
        if args.sqlite:
            with tempfile.TemporaryDirectory() as tmp:
                add("sqlite", bench(f"sqlite:///{Path(tmp) / 'bench.db'}", *sizes))
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
