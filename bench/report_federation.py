"""How long the federation report takes over 1,000,000 usage records on PostgreSQL.

The federation: the 19 factories of the shipped catalog, 200 organisations, 2,000 projects,
one call per factory and access mode, 10,000 allocations made through 2026, and N jobs
with one usage record each (default 1,000,000), spread over the year, written with COPY.
Then the report (the service, as the API calls it) for the whole year, for one month and
for one factory's year, several runs each; prints a table of medians against the 2 s target.

    uv run python bench/report_federation.py [--records 1000000] [--runs 5] [--seed 1]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import statistics
import time
import uuid

from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, text

from fabbrica.catalog.loader import load_catalog
from fabbrica.services.access.calls import call_id_for
from fabbrica.services.federation_report import report_between
from fabbrica.store.db import Database
from fabbrica.store.migrate import upgrade
from fabbrica.store.models import User

PG_ADMIN = os.environ.get(
    "FABBRICA_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
UTC = dt.UTC
YEAR = dt.datetime(2026, 1, 1, tzinfo=UTC)
TYPES = ("startup", "sme", "large_industry", "academia", "public_sector")
COUNTRIES = ("IT", "FI", "DE", "FR", "ES", "SE", "AT", "GR", "LU", "PL", "NL", "CZ", "BG", "SI")
TARGET_S = 2.0


def fill(db: Database, records: int, seed: int) -> float:
    """The federation above, the jobs and usage records by COPY; returns the seconds taken."""
    rng = random.Random(seed)
    catalog = load_catalog()
    began = time.perf_counter()
    raw = db.engine.raw_connection()
    try:
        conn = raw.driver_connection
        assert conn is not None
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO users (id, email, name, role, active, created_at) "
                "VALUES (1, 'admin@bench', 'admin', 'admin', true, %s)",
                (YEAR,),
            )
            with cur.copy(
                "COPY organisations (id, name, country, type, sector, created_by, created_at) "
                "FROM STDIN"
            ) as copy:
                sectors = [s.id for s in catalog.sectors] + [None]
                for n in range(1, 201):
                    copy.write_row(
                        (n, f"org {n}", rng.choice(COUNTRIES), rng.choice(TYPES),
                         rng.choice(sectors), 1, YEAR)
                    )  # fmt: skip
            with cur.copy(
                "COPY projects (pk, id, title, organisation_id, pi_user_id, mode, created_at) "
                "FROM STDIN"
            ) as copy:
                for n in range(1, 2001):
                    copy.write_row((n, f"P{n}", "p", rng.randint(1, 200), 1, "fast_lane", YEAR))
            calls = []
            with cur.copy(
                "COPY calls (id, mode, factory_id, state, decision, min_reviews, created_at) "
                "FROM STDIN"
            ) as copy:
                for site in catalog.factories:
                    for mode in catalog.access_modes:
                        call = call_id_for(site.id, mode.id)
                        calls.append((call, site.id))
                        copy.write_row((call, mode.id, site.id, "open", "manual", 0, YEAR))
            allocations = []
            with cur.copy(
                "COPY allocations (id, project_pk, call_id, factory_id, granted_gpu_hours, "
                "used_gpu_hours, reserved_gpu_hours, valid_from, valid_until, state, "
                "expiry_notices_sent, final_report_due, created_at) FROM STDIN"
            ) as copy:
                for n in range(1, 10_001):
                    call, factory = rng.choice(calls)
                    made = YEAR + dt.timedelta(seconds=rng.randrange(300 * 86400))
                    allocations.append((n, factory, made, rng.randint(1, 2000)))
                    copy.write_row(
                        (n, allocations[-1][3], call, factory, 1e9, 0.0, 0.0, made,
                         made + dt.timedelta(days=180), "active", 0,
                         made + dt.timedelta(days=270), made)
                    )  # fmt: skip
            with cur.copy(
                "COPY jobs (id, project_pk, user_id, name, spec, state, gpus, nodes, "
                "time_limit_s, factory_id, allocation_id, reserved_gpu_hours, gpu_hours, "
                "cancel_requested, submitted_at, started_at, ended_at) FROM STDIN"
            ) as jobs_copy:
                usage = []
                for n in range(1, records + 1):
                    alloc, factory, made, project = allocations[rng.randrange(len(allocations))]
                    started = made + dt.timedelta(seconds=rng.randrange(60 * 86400))
                    elapsed = rng.uniform(60, 86400)
                    gpus = rng.choice((1, 2, 4, 8))
                    hours = gpus * elapsed / 3600
                    ended = started + dt.timedelta(seconds=elapsed)
                    jobs_copy.write_row(
                        (n, project, 1, "j", "{}", "succeeded", gpus, 1, 86400, factory, alloc,
                         0.0, hours, False, started, started, ended)
                    )  # fmt: skip
                    usage.append((n, n, alloc, gpus, elapsed, hours, ended, factory))
            with cur.copy(
                "COPY usage_records (id, job_id, allocation_id, gpus, elapsed_s, gpu_hours, "
                "created_at, factory_id) FROM STDIN"
            ) as copy:
                for row in usage:
                    copy.write_row(row)
        conn.commit()
    finally:
        raw.close()
    with db.engine.begin() as sql:
        sql.execute(text("ANALYZE"))
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    name = f"fabbrica_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    console = Console()
    try:
        db = Database(url)
        upgrade(db.engine)
        filled = fill(db, args.records, args.seed)
        console.print(f"wrote {args.records:,} jobs and usage records by COPY in {filled:.1f} s")
        catalog = load_catalog()
        cases = [
            ("whole year, all factories", YEAR, YEAR.replace(year=2027), None),
            ("one month (June), all factories", YEAR.replace(month=6), YEAR.replace(month=7), None),
            ("whole year, it4lia", YEAR, YEAR.replace(year=2027), "it4lia"),
        ]
        table = Table(
            title=f"Federation report over {args.records:,} usage records on PostgreSQL "
            f"({args.runs} runs each)"
        )
        for column in ("period", "records in period", "median s", "min s", "max s", "target"):
            table.add_column(column, justify="right")
        with db.read_session() as session:
            actor = session.get(User, 1)
            assert actor is not None
            for label, start, end, factory in cases:
                times = []
                report = {}
                for _ in range(args.runs):
                    began = time.perf_counter()
                    report = report_between(
                        session, actor, catalog, start=start, end=end, factory=factory
                    )
                    times.append(time.perf_counter() - began)
                median = statistics.median(times)
                table.add_row(
                    label,
                    f"{report['totals']['usage_records']:,}",
                    f"{median:.3f}",
                    f"{min(times):.3f}",
                    f"{max(times):.3f}",
                    "ok" if median < TARGET_S else f"OVER {TARGET_S} s",
                )
        console.print(table)
        db.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
