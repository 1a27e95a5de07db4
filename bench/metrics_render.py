"""How long `/metrics` takes to render as the jobs table grows, on PostgreSQL (and SQLite).

Fills a fresh database with a federation's worth of rows (jobs on every factory of the
catalog in every state, with waits; proposals, allocations, agents with capacity, an
outbox), then times, at each size, the median of several renders of:

- collect: the database collector alone (`generate_latest` on the app's registry);
- GET /metrics: the whole request through the real app (in process, ASGI), every scrape
  reading the database (FABBRICA_METRICS_CACHE_SECONDS=0);
- GET served: the same as `fabbrica up` and `fabbrica serve` answer a scrape
  (FABBRICA_METRICS_CACHE_SECONDS, --cache, default 5): from the last collection, a newer
  one read in the background once it is older than --cache (docs/observability.md).

    uv run python bench/metrics_render.py [--jobs 1000,10000,100000] [--runs 7] [--sqlite]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client import generate_latest
from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import Connection, make_url

from fabbrica.api.app import create_app
from fabbrica.api.deps import AppContext
from fabbrica.catalog.loader import load_catalog
from fabbrica.catalog.model import Catalog
from fabbrica.services.access.calls import seed_calls
from fabbrica.store.db import Database, normalise_url
from fabbrica.store.migrate import upgrade
from fabbrica.store.models import (
    Agent,
    Allocation,
    Call,
    Job,
    Organisation,
    OutboxEmail,
    Project,
    Proposal,
    User,
)

PG_ADMIN = os.environ.get(
    "FABBRICA_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
STATES = (["succeeded"] * 60 + ["failed"] * 10 + ["cancelled"] * 5 + ["timed_out"] * 2
          + ["running"] * 10 + ["dispatched"] * 5 + ["queued"] * 8)  # fmt: skip
CHUNK = 5000


def _base(db: Database, catalog: Catalog) -> tuple[int, int, list[tuple[str, str, str]]]:
    """A user, an organisation, a project, the catalog's calls; (user, project, calls)."""
    with db.session() as session:
        user = User(email="bench@example.eu", name="B", role="user", active=True, created_at=NOW)
        session.add(user)
        session.flush()
        org = Organisation(
            name="O", country="IT", type="startup", created_by=user.id, created_at=NOW
        )
        session.add(org)
        session.flush()
        project = Project(
            id="FAB-BENCH", title="P", organisation_id=org.id, pi_user_id=user.id,
            mode="playground", created_at=NOW,
        )  # fmt: skip
        session.add(project)
        seed_calls(session, catalog, NOW)
        session.flush()
        calls = [(c.id, c.factory_id, c.mode) for c in session.query(Call).order_by(Call.id)]
        return user.id, project.pk, calls


def _fill_access(
    conn: Connection, user: int, project: int, calls: list[tuple[str, str, str]], rng: random.Random
) -> None:
    proposals, allocations = [], []
    for i in range(3000):
        call_id, factory, _ = calls[i % len(calls)]
        submitted = NOW - dt.timedelta(days=rng.uniform(1, 300))
        decided = submitted + dt.timedelta(seconds=rng.expovariate(1 / 86400)) if i % 5 else None
        state = "accepted" if decided and i % 7 else ("rejected" if decided else "submitted")
        proposals.append(dict(
            project_pk=project, call_id=call_id, state=state, gpu_hours=100.0, months=3,
            abstract="a", created_by=user, created_at=submitted, submitted_at=submitted,
            decided_at=decided, auto_decided=False,
        ))  # fmt: skip
        if state == "accepted":
            allocations.append(dict(
                project_pk=project, call_id=call_id, factory_id=factory,
                granted_gpu_hours=1000.0, used_gpu_hours=rng.uniform(0, 980),
                reserved_gpu_hours=rng.uniform(0, 10), valid_from=submitted,
                valid_until=submitted + dt.timedelta(days=90),
                state="active" if i % 3 else "expired", expiry_notices_sent=0,
                final_report_due=submitted + dt.timedelta(days=120), created_at=submitted,
            ))  # fmt: skip
    conn.execute(insert(Proposal), proposals)
    conn.execute(insert(Allocation), allocations)
    factories = sorted({factory for _, factory, _ in calls})
    conn.execute(insert(Agent), [dict(
        factory_id=f, user_id=user, backend="slurm", capabilities="[]", last_seen_at=NOW,
        capacity=json.dumps([{"partition": f"p{k}", "gpu_model": ["H100", "A100", "MI250X"][k],
                              "total_gpus": 512, "free_gpus": rng.randrange(512), "queued": 3}
                             for k in range(3)]),
    ) for f in factories])  # fmt: skip
    conn.execute(insert(OutboxEmail), [dict(
        to_address="a@b.eu", subject="s", body="b", kind="decision", attempts=i % 6,
        created_at=NOW - dt.timedelta(minutes=i), sent_at=None if i % 4 == 0 else NOW,
    ) for i in range(2000)])  # fmt: skip


def _add_jobs(
    conn: Connection, user: int, project: int, factories: list[str], count: int, rng: random.Random
) -> None:
    rows = []
    for _ in range(count):
        state = rng.choice(STATES)
        submitted = NOW - dt.timedelta(seconds=rng.uniform(0, 90 * 86400))
        started = None
        if state not in ("queued", "dispatched", "cancelled"):
            started = submitted + dt.timedelta(seconds=rng.expovariate(1 / 600))
        lost = state == "queued" and rng.random() < 0.2
        rows.append(dict(
            project_pk=project, user_id=user, name="j", spec="{}", state=state,
            reason=f"lost at {rng.choice(factories)}; queued again" if lost else None,
            gpus=rng.choice((1, 2, 4, 8)), nodes=1, time_limit_s=3600,
            factory_id=None if state == "queued" else rng.choice(factories),
            reserved_gpu_hours=0.0, cancel_requested=False, submitted_at=submitted,
            started_at=started,
        ))  # fmt: skip
        if len(rows) == CHUNK:
            conn.execute(insert(Job), rows)
            rows = []
    if rows:
        conn.execute(insert(Job), rows)


def _backend_cpu_s(database: str | None) -> float:
    """CPU seconds the database's server processes for `database` have used (Linux /proc;
    0 for SQLite, which runs in this process)."""
    if database is None:
        return 0.0
    tick = os.sysconf("SC_CLK_TCK")
    used = 0.0
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or database not in (proc / "cmdline").read_text():
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        used += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return used


def _measure(action: Callable[[], object], runs: int, database: str | None) -> tuple[float, float]:
    """Median wall time, and mean CPU time (this process and the database server), in ms."""
    action()  # warm: connections, caches, compiled statements
    times = []
    cpu_began, backend_began = time.process_time(), _backend_cpu_s(database)
    for _ in range(runs):
        began = time.perf_counter()
        action()
        times.append((time.perf_counter() - began) * 1000)
    cpu = time.process_time() - cpu_began + _backend_cpu_s(database) - backend_began
    return statistics.median(times), cpu * 1000 / runs


# jobs; collect wall, CPU; GET wall, CPU; GET cached wall (ms)
Row = tuple[int, float, float, float, float, float]


def bench(url: str, sizes: list[int], runs: int, cache: float) -> list[Row]:
    catalog = load_catalog()
    db = Database(url)
    upgrade(db.engine)
    rng = random.Random(16)
    user, project, calls = _base(db, catalog)
    factories = sorted({factory for _, factory, _ in calls})
    with db.engine.begin() as conn:
        _fill_access(conn, user, project, calls, rng)
    app = create_app(AppContext(db=db, catalog=catalog, clock=lambda: NOW))
    registry = app.state.metrics_registry
    cached_app = create_app(
        AppContext(db=db, catalog=catalog, clock=lambda: NOW, metrics_cache_seconds=cache)
    )
    results, have = [], 0
    with TestClient(app) as client, TestClient(cached_app) as cached:
        for size in sizes:
            with db.engine.begin() as conn:
                _add_jobs(conn, user, project, factories, size - have, rng)
            have = size
            if db.backend == "postgresql":
                with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
                    c.execute(text("VACUUM ANALYZE"))  # as autovacuum would, after a load
            assert client.get("/metrics").status_code == 200
            database = make_url(url).database if db.backend == "postgresql" else None
            collect = _measure(lambda: generate_latest(registry), runs, database)
            scrape = _measure(lambda: client.get("/metrics"), runs, database)
            warm, _ = _measure(lambda: cached.get("/metrics"), runs, database)
            results.append((size, *collect, *scrape, warm))
    db.dispose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", default="1000,10000,100000", help="database sizes, in jobs")
    parser.add_argument("--runs", type=int, default=7, help="renders per size (median)")
    parser.add_argument("--sqlite", action="store_true", help="also on SQLite")
    parser.add_argument("--cache", type=float, default=5.0, help="seconds, for GET cached")
    args = parser.parse_args()
    sizes = sorted(int(n) for n in args.jobs.split(","))
    admin = create_engine(normalise_url(PG_ADMIN), isolation_level="AUTOCOMMIT")
    name = f"fabbrica_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    table = Table(
        title=f"/metrics render time: wall, median of {args.runs}; CPU (this process and the "
        f"database server), mean; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    for column in ("database", "jobs", "collect wall ms", "collect CPU ms",
                   "GET /metrics wall ms", "GET /metrics CPU ms", "GET under 50 ms",
                   f"GET served (cache {args.cache:g} s) ms", "served < 50 ms"):  # fmt: skip
        table.add_column(column, justify="right")

    def add(database: str, rows: list[Row]) -> None:
        for size, collect, collect_cpu, scrape, scrape_cpu, warm in rows:
            table.add_row(database, f"{size:,}", f"{collect:.1f}", f"{collect_cpu:.1f}",
                          f"{scrape:.1f}", f"{scrape_cpu:.1f}",
                          "yes" if scrape < 50 else "NO", f"{warm:.1f}",
                          "yes" if warm < 50 else "NO")  # fmt: skip

    try:
        url = make_url(normalise_url(PG_ADMIN)).set(database=name)
        add("postgresql", bench(url.render_as_string(False), sizes, args.runs, args.cache))
        if args.sqlite:
            with tempfile.TemporaryDirectory() as tmp:
                add(
                    "sqlite",
                    bench(f"sqlite:///{Path(tmp) / 'bench.db'}", sizes, args.runs, args.cache),
                )
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    Console().print(table)


if __name__ == "__main__":
    main()
