"""The federation report against independent SQL over a seeded federation (both databases):
every cell equal, the period half-open, an operator limited to their factories."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select

from fabbrica.core.errors import Forbidden, InvalidInput
from fabbrica.services.federation_report import federation_report, report_between
from fabbrica.store.db import Database
from fabbrica.store.models import OperatorFactory, User
from tests.federation_data import END, START, assert_same, expected, generate, report_catalog


def _user(db: Database, role: str, factories: tuple[str, ...] = ()) -> int:
    with db.session() as session:
        user = User(email=f"{role}@example.org", name=role, role=role)
        user.operated = [OperatorFactory(factory_id=f) for f in factories]
        session.add(user)
        session.flush()
        return user.id


def test_every_cell_equals_independent_sql(db: Database, tmp_path: Path) -> None:
    catalog, _ = report_catalog(tmp_path)
    with db.session() as session:
        counts = generate(session, catalog)
    assert counts["proposals"] >= 400 and counts["allocations"] >= 200
    assert counts["usage_records"] >= 400
    admin = _user(db, "admin")
    with db.session() as session:
        actor = session.get(User, admin)
        assert actor is not None
        for start, end in ((START, END), (dt.datetime(2026, 9, 1, tzinfo=dt.UTC), END)):
            report = report_between(session, actor, catalog, start=start, end=end)
            want = expected(session, catalog, start, end)
            assert_same(report, want)
            # the totals are the sums of the rows of every breakdown
            for rows in report["by"].values():
                assert sum(r["usage_records"] for r in rows) == report["totals"]["usage_records"]
                assert sum(r["allocations"] for r in rows) == report["totals"]["allocations"]
        # the national channel and it4lia's own EU share come from the catalog
        report = report_between(session, actor, catalog, start=START, end=END)
        it4lia = next(r for r in report["funding"] if r["factory"] == "it4lia")
        assert it4lia["eu_share_target"] == 0.7
        assert any(r["national_gpu_hours"] > 0 for r in report["funding"])
        assert report["startups_and_smes"]["granted_share"] is not None
        assert report["decisions"] and report["time_to_first_job"]


def test_the_period_is_half_open_and_in_utc(db: Database, tmp_path: Path) -> None:
    """A record on `from` counts, one on `to` does not (the generator puts one on each)."""
    catalog, _ = report_catalog(tmp_path)
    with db.session() as session:
        generate(session, catalog)
    admin = _user(db, "admin")
    with db.session() as session:
        actor = session.get(User, admin)
        assert actor is not None
        second = dt.timedelta(microseconds=1)
        on_start = report_between(session, actor, catalog, start=START, end=START + second)
        assert on_start["totals"]["usage_records"] == 1
        assert on_start["totals"]["allocations"] >= 1
        on_end = report_between(session, actor, catalog, start=END, end=END + second)
        before_end = report_between(session, actor, catalog, start=END - second, end=END)
        assert on_end["totals"]["usage_records"] == 1
        assert before_end["totals"]["usage_records"] == 0
        # the days of the API: [2026-10-01, 2026-11-01) is the month of October
        by_days = federation_report(
            session,
            actor,
            catalog,
            now=END,
            start=dt.date(2026, 10, 1),
            end=dt.date(2026, 11, 1),
        )
        assert (
            by_days["totals"]
            == report_between(session, actor, catalog, start=START, end=END)["totals"]
        )
        # by default: the last full month
        default = federation_report(session, actor, catalog, now=END + dt.timedelta(days=3))
        assert default["period"]["from"].startswith("2026-10-01")
        assert default["totals"] == by_days["totals"]


def test_an_operator_sees_their_factories_only(db: Database, tmp_path: Path) -> None:
    catalog, _ = report_catalog(tmp_path)
    with db.session() as session:
        generate(session, catalog)
    op = _user(db, "operator", ("it4lia", "mimer"))
    tenant = _user(db, "user")
    admin = _user(db, "admin")
    with db.session() as session:
        actor, user, boss = (session.get(User, i) for i in (op, tenant, admin))
        assert actor is not None and user is not None and boss is not None
        report = report_between(session, actor, catalog, start=START, end=END)
        assert report["factories"] == ["it4lia", "mimer"]
        assert {r["key"] for r in report["by"]["factory"]} <= {"it4lia", "mimer"}
        one = report_between(session, boss, catalog, start=START, end=END, factory="it4lia")
        mine = report_between(session, actor, catalog, start=START, end=END, factory="it4lia")
        assert mine == one
        whole = report_between(session, boss, catalog, start=START, end=END)
        used = {r["key"]: r["used_gpu_hours"] for r in whole["by"]["factory"]}
        assert report["totals"]["used_gpu_hours"] == pytest.approx(
            used.get("it4lia", 0) + used.get("mimer", 0)
        )
        with pytest.raises(Forbidden):
            report_between(session, actor, catalog, start=START, end=END, factory="jaif")
        with pytest.raises(Forbidden):
            report_between(session, user, catalog, start=START, end=END)
        with pytest.raises(InvalidInput) as unknown:
            report_between(session, boss, catalog, start=START, end=END, factory="atlantis")
        assert unknown.value.field == "factory"
        with pytest.raises(InvalidInput) as backwards:
            report_between(session, boss, catalog, start=END, end=START)
        assert backwards.value.field == "from"
        assert session.scalar(select(User.id).where(User.id == op)) == op
