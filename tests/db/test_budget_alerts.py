"""Budget alerts on a real database (SQLite and PostgreSQL): members are told once when an
allocation passes 75, 90 and 100 % of its GPU-hours and when it has 14 and 3 days left;
top-ups and extensions re-arm them; operators get one digest a day of their own factories'
allocations at 90 % or more. The clock is the test's (`now` passed to the services)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from fabbrica.api.deps import AppContext
from fabbrica.core.identity import Role
from fabbrica.services import alerts, identity, notify
from fabbrica.services.access import allocations, projects
from fabbrica.services.access.allocations import AllocationChange
from fabbrica.store.models import Allocation, BudgetAlert, OperatorDigest, OutboxEmail
from tests.conftest import Clock, bearer
from tests.db.test_access_services import (
    Applicant,
    allocation_for,
    apply,
    load_admin,
    load_user,
    new_applicant,
    new_user,
)

MEMBER_EMAIL = "eng@startup.it"


@dataclass(frozen=True)
class Team:
    applicant: Applicant
    member_id: int
    allocation_id: int
    end: dt.datetime


@pytest.fixture
def team(ctx: AppContext, clock: Clock) -> Team:
    """A PI and one member who joined; 1,000 GPU-hours for 1 month on the IT4LIA playground."""
    applicant = new_applicant(ctx, "pi@startup.it")
    member_id = new_user(ctx, MEMBER_EMAIL, name="Eng")
    with ctx.db.session() as s:
        _, secret = projects.invite(
            s, load_user(s, applicant.pi_id), project_id=applicant.project_id,
            email=MEMBER_EMAIL, now=clock(),
        )  # fmt: skip
        projects.accept(s, load_user(s, member_id), token=secret, now=clock())
    allocation = allocation_for(ctx, apply(ctx, applicant))
    return Team(applicant, member_id, allocation.id, allocation.valid_until)


def use(ctx: AppContext, allocation_id: int, used: float) -> None:
    with ctx.db.session() as s:
        allocation = s.get(Allocation, allocation_id)
        assert allocation is not None
        allocation.used_gpu_hours = used


def check(ctx: AppContext, now: dt.datetime) -> int:
    with ctx.db.session() as s:
        return alerts.check_budgets(s, now)


def outbox(ctx: AppContext, kind: str = alerts.KIND) -> list[OutboxEmail]:
    with ctx.db.session() as s:
        query = select(OutboxEmail).where(OutboxEmail.kind == kind).order_by(OutboxEmail.id)
        return list(s.scalars(query))


def thresholds(ctx: AppContext, allocation_id: int) -> list[str]:
    with ctx.db.session() as s:
        query = select(BudgetAlert.threshold).where(BudgetAlert.allocation_id == allocation_id)
        return sorted(s.scalars(query))


# --- GPU-hours used ---------------------------------------------------------------------------


def test_one_jump_to_100_percent_tells_each_member_three_times_in_order(
    ctx: AppContext, clock: Clock, team: Team
) -> None:
    a, pid = team.allocation_id, team.applicant.project_id
    use(ctx, a, 749.9)
    assert check(ctx, clock()) == 0
    use(ctx, a, 1000)
    assert check(ctx, clock()) == 3
    assert check(ctx, clock()) == 0  # the next tick: nothing new
    clock.advance(days=1)
    assert check(ctx, clock()) == 0

    emails = outbox(ctx)
    prefix = f"[Fabbrica] Allocation {a} of {pid} at it4lia: 1,000.0 of 1,000.0 GPU-hours used"
    for address in ("pi@startup.it", MEMBER_EMAIL):
        mine = [e for e in emails if e.to_address == address]
        assert [e.subject for e in mine] == [
            f"{prefix} (75%)",
            f"{prefix} (90%)",
            f"{prefix} (100%)",
        ]
    assert len(emails) == 6  # 3 thresholds x 2 members, PI first within each threshold
    assert [e.to_address for e in emails[:2]] == ["pi@startup.it", MEMBER_EMAIL]
    body = emails[0].body
    assert f"Project: {pid} (Project of pi@startup.it)" in body
    assert "Factory: it4lia (call it4lia-playground)" in body
    assert "GPU-hours: 1,000.0 used, 0 reserved by running jobs, 1,000.0 granted" in body
    assert "Valid until: 2026-12-21 (30 days left)" in body
    assert "What to do: if the project needs more, its PI asks the operator" in body
    assert "top-up" in body
    assert "no new job can run on it" in emails[-1].body
    assert thresholds(ctx, a) == ["used_100", "used_75", "used_90"]


def test_each_threshold_is_told_when_passed(ctx: AppContext, clock: Clock, team: Team) -> None:
    a = team.allocation_id
    for used, told in [(100, 0), (750, 1), (800, 0), (899.99, 0), (900, 1), (999, 0), (1000, 1)]:
        use(ctx, a, used)
        assert check(ctx, clock()) == told, used
    subjects = [e.subject for e in outbox(ctx) if e.to_address == MEMBER_EMAIL]
    assert [s.rsplit(" ", 1)[1] for s in subjects] == ["(75%)", "(90%)", "(100%)"]
    assert "750.0 of 1,000.0" in subjects[0]


def test_the_unique_key_refuses_a_second_alert_and_its_emails(
    ctx: AppContext, clock: Clock, team: Team
) -> None:
    """Two controllers racing (or a replayed round) write the same alert: the second
    transaction fails whole, its emails with it."""
    use(ctx, team.allocation_id, 800)
    assert check(ctx, clock()) == 1
    with pytest.raises(IntegrityError), ctx.db.session() as s:
        allocation = s.get_one(Allocation, team.allocation_id)
        notify.enqueue(s, to=MEMBER_EMAIL, subject="again", body="x", kind=alerts.KIND, now=clock())
        s.add(alerts._row(allocation, "used_75", "again", clock()))
        s.flush()
    assert [e.subject for e in outbox(ctx)] == [outbox(ctx)[0].subject] * 2
    assert "again" not in {e.subject for e in outbox(ctx)}


def test_a_top_up_re_arms_the_thresholds_no_longer_passed(
    ctx: AppContext, clock: Clock, team: Team
) -> None:
    a = team.allocation_id
    use(ctx, a, 950)
    assert check(ctx, clock()) == 2
    with ctx.db.session() as s:
        change = AllocationChange("top_up", "more data", gpu_hours=250)
        allocations.change(s, load_admin(s), a, change, now=clock())
    assert thresholds(ctx, a) == ["used_75"]  # 950 of 1,250 is 76 %: 90 % is to come again
    assert check(ctx, clock()) == 0
    use(ctx, a, 1125)
    assert check(ctx, clock()) == 1
    assert outbox(ctx)[-1].subject.endswith("1,125.0 of 1,250.0 GPU-hours used (90%)")


# --- days left ------------------------------------------------------------------------------------


def test_days_left_alerts_at_14_and_3_days(ctx: AppContext, team: Team) -> None:
    a, end = team.allocation_id, team.end
    assert check(ctx, end - dt.timedelta(days=20)) == 0
    assert check(ctx, end - dt.timedelta(days=14, minutes=1)) == 0
    assert check(ctx, end - dt.timedelta(days=14)) == 1
    assert check(ctx, end - dt.timedelta(days=10)) == 0
    assert check(ctx, end - dt.timedelta(days=3, minutes=1)) == 0
    assert check(ctx, end - dt.timedelta(days=3)) == 1
    assert check(ctx, end - dt.timedelta(days=1)) == 0
    assert check(ctx, end + dt.timedelta(days=1)) == 0  # past the end: expiry's, not ours

    emails = outbox(ctx)
    prefix = f"[Fabbrica] Allocation {a} of {team.applicant.project_id} at it4lia"
    assert [(e.to_address, e.subject) for e in emails] == [
        ("pi@startup.it", f"{prefix}: 14 days left (ends 2026-12-21)"),
        (MEMBER_EMAIL, f"{prefix}: 14 days left (ends 2026-12-21)"),
        ("pi@startup.it", f"{prefix}: 3 days left (ends 2026-12-21)"),
        (MEMBER_EMAIL, f"{prefix}: 3 days left (ends 2026-12-21)"),
    ]
    assert "its PI asks the operator of the factory for an extension" in emails[0].body
    assert "The final report is due by 2027-03-21." in emails[0].body


def test_a_late_first_round_tells_the_most_urgent_only(ctx: AppContext, team: Team) -> None:
    assert check(ctx, team.end - dt.timedelta(days=2)) == 2  # days_14 recorded, days_3 told
    emails = outbox(ctx)
    assert [e.subject.split(": ")[-1] for e in emails] == ["2 days left (ends 2026-12-21)"] * 2
    assert thresholds(ctx, team.allocation_id) == ["days_14", "days_3"]
    assert check(ctx, team.end - dt.timedelta(days=1)) == 0


def test_an_extension_re_arms_the_days_left(ctx: AppContext, clock: Clock, team: Team) -> None:
    clock.now = team.end - dt.timedelta(days=3)
    assert check(ctx, clock()) == 2
    with ctx.db.session() as s:
        change = AllocationChange("extend", "more", months=1)
        allocations.change(s, load_admin(s), team.allocation_id, change, now=clock())
    assert thresholds(ctx, team.allocation_id) == []
    assert check(ctx, clock()) == 0
    new_end = dt.datetime(2027, 1, 21, 12, 0, tzinfo=dt.UTC)
    assert check(ctx, new_end - dt.timedelta(days=14)) == 1
    assert outbox(ctx)[-1].subject.endswith("14 days left (ends 2027-01-21)")


def test_ended_allocations_are_not_checked(ctx: AppContext, clock: Clock, team: Team) -> None:
    with ctx.db.session() as s:
        change = AllocationChange("terminate", "done")
        allocations.change(s, load_admin(s), team.allocation_id, change, now=clock())
    use(ctx, team.allocation_id, 1000)
    assert check(ctx, clock() - dt.timedelta(days=1)) == 0
    assert outbox(ctx) == []


# --- notices ----------------------------------------------------------------------------------


def test_members_see_their_projects_notices_newest_first(
    ctx: AppContext, clock: Clock, team: Team, api: TestClient, admin: dict[str, str]
) -> None:
    use(ctx, team.allocation_id, 800)
    assert check(ctx, clock()) == 1
    clock.advance(days=17)
    assert check(ctx, clock()) == 1  # 13 days left
    outsider = new_applicant(ctx, "other@startup.it")
    allocation_for(ctx, apply(ctx, outsider))
    with ctx.db.session() as s:
        tokens = {
            who: identity.create_token(s, load_user(s, uid), name="t", now=clock())[1]
            for who, uid in [("pi", team.applicant.pi_id), ("member", team.member_id),
                             ("outsider", outsider.pi_id)]
        }  # fmt: skip
    for who in ("pi", "member"):
        r = api.get("/api/v1/notices", headers=bearer(tokens[who]))
        assert r.status_code == 200, r.text
        found = r.json()
        assert [n["threshold"] for n in found] == ["days_14", "used_75"]
        assert found[1] | {"id": 0, "created_at": ""} == {
            "id": 0,
            "allocation": team.allocation_id,
            "project": team.applicant.project_id,
            "factory": "it4lia",
            "threshold": "used_75",
            "message": f"Allocation {team.allocation_id} of {team.applicant.project_id} at "
            "it4lia: 800.0 of 1,000.0 GPU-hours used (75%)",
            "used_gpu_hours": 800.0,
            "gpu_hours": 1000.0,
            "valid_until": "2026-12-21T12:00:00Z",
            "created_at": "",
        }
    limited = api.get("/api/v1/notices?limit=1", headers=bearer(tokens["pi"])).json()
    assert [n["threshold"] for n in limited] == ["days_14"]
    assert api.get("/api/v1/notices", headers=bearer(tokens["outsider"])).json() == []
    assert api.get("/api/v1/notices", headers=admin).json() == []  # not a member
    r = api.get("/api/v1/notices?limit=0", headers=admin)
    assert r.status_code == 422 and r.json()["error"]["field"] == "limit"


# --- operators' daily digest --------------------------------------------------------------------


def digest(ctx: AppContext, now: dt.datetime) -> int:
    with ctx.db.session() as s:
        return alerts.send_digests(s, now)


def test_operators_get_one_digest_a_day_of_their_own_factories(
    ctx: AppContext, clock: Clock
) -> None:
    op_it = new_user(ctx, "op@cineca.it", Role.OPERATOR, "Op", ("it4lia",))
    new_user(ctx, "op@jaif.eu", Role.OPERATOR, "Op", ("jaif",))
    high = allocation_for(ctx, apply(ctx, new_applicant(ctx, "a@startup.it")))
    low = allocation_for(ctx, apply(ctx, new_applicant(ctx, "b@startup.it")))
    other = new_applicant(ctx, "c@startup.it")
    at_jaif = allocation_for(ctx, apply(ctx, other, call_id="jaif-playground"))
    use(ctx, high.id, 950)
    use(ctx, low.id, 899)
    use(ctx, at_jaif.id, 10)

    assert digest(ctx, clock()) == 1
    [email] = outbox(ctx, alerts.DIGEST_KIND)
    assert email.to_address == "op@cineca.it"
    assert email.subject == "[Fabbrica] 2026-11-21: 1 allocations at 90% or more"
    assert f"allocation {high.id} of " in email.body
    assert "950.0 of 1,000.0 GPU-hours used (95%)" in email.body
    assert f"allocation {low.id} " not in email.body and "jaif" not in email.body
    assert "fabbrica allocation top-up" in email.body

    use(ctx, at_jaif.id, at_jaif.granted_gpu_hours)
    clock.advance(hours=11)  # the same day (UTC): nothing more, for either operator
    assert digest(ctx, clock()) == 0
    clock.advance(hours=1)  # 2026-11-22
    assert digest(ctx, clock()) == 2
    emails = outbox(ctx, alerts.DIGEST_KIND)
    assert [e.to_address for e in emails] == ["op@cineca.it", "op@cineca.it", "op@jaif.eu"]
    assert f"allocation {at_jaif.id} of {other.project_id}" in emails[2].body
    assert "it4lia" not in emails[2].body
    with ctx.db.session() as s:
        days = s.execute(
            select(OperatorDigest.user_id, OperatorDigest.day, OperatorDigest.allocations)
            .order_by(OperatorDigest.day, OperatorDigest.user_id)
        ).all()  # fmt: skip
    jaif_op = days[1][0]
    assert days == [
        (op_it, "2026-11-21", 1), (jaif_op, "2026-11-21", 0),
        (op_it, "2026-11-22", 1), (jaif_op, "2026-11-22", 1),
    ]  # fmt: skip


def test_no_digest_when_nothing_is_above_90_percent(ctx: AppContext, clock: Clock) -> None:
    new_user(ctx, "op@cineca.it", Role.OPERATOR, "Op", ("it4lia",))
    allocation_for(ctx, apply(ctx, new_applicant(ctx, "a@startup.it")))
    assert digest(ctx, clock()) == 0
    assert outbox(ctx, alerts.DIGEST_KIND) == []


def test_the_alert_step_uses_its_clock(ctx: AppContext, clock: Clock, team: Team) -> None:
    step = alerts.AlertStep(ctx.db, clock)
    assert step() == 0
    clock.now = team.end - dt.timedelta(days=14)
    assert step() == 1
    assert step() == 0
    assert len(outbox(ctx)) == 2
