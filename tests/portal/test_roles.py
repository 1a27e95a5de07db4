"""The reviewer's, the operator's and the federation admin's pages in process (the real app,
both databases): each page, who may open it (others: 404), CSRF refused with nothing
changed, stored text escaped, reviewer identities never shown to applicants or to other
reviewers, operators scoped to the factories they operate."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from fabbrica.api.app import create_app
from fabbrica.api.deps import AppContext
from fabbrica.portal import install_portal
from fabbrica.store.models import (
    Allocation,
    AuditEntry,
    Call,
    Job,
    Project,
    Proposal,
    Review,
    UsageRecord,
)
from tests.api.helpers import snapshot
from tests.conftest import bearer
from tests.portal.test_pages import PAYLOAD, csrf_of, ok, sign_in

API = "/api/v1"


@pytest.fixture
def portal(ctx: AppContext) -> Iterator[TestClient]:
    app = create_app(ctx)
    install_portal(app)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@dataclass
class World:
    """A startup's Large Scale proposal at it4lia (in review, two reviewers assigned), the
    operators of it4lia and of jaif, three reviewers (the third not assigned)."""

    client: TestClient
    ctx: AppContext
    tokens: dict[str, dict[str, str]]
    proposal: int
    project: str

    def as_user(self, email: str) -> TestClient:
        self.client.cookies.clear()
        sign_in(self.client, email)
        return self.client

    def api(self, method: str, path: str, who: str, **body: Any) -> Any:
        response = self.client.request(method, f"{API}{path}", headers=self.tokens[who], json=body)
        assert response.status_code < 300, response.text
        return response.json()


def _user(api: TestClient, admin: dict[str, str], email: str, role: str, **extra: Any) -> Any:
    body = {"email": email, "name": email.split("@")[0], "role": role, **extra}
    return ok(api.post(f"{API}/users", headers=admin, json=body), 201)


@pytest.fixture
def world(portal: TestClient, admin: dict[str, str], ctx: AppContext) -> World:
    tokens: dict[str, dict[str, str]] = {"admin": admin}
    made = {
        "pi@startup.it": _user(portal, admin, "pi@startup.it", "user"),
        "op@it4lia.it": _user(portal, admin, "op@it4lia.it", "operator", factories=["it4lia"]),
        "op@jaif.jp": _user(portal, admin, "op@jaif.jp", "operator", factories=["jaif"]),
    }
    for n in range(3):
        made[f"r{n}@review.eu"] = _user(portal, admin, f"r{n}@review.eu", "reviewer")
    tokens.update({email: bearer(user["token"]) for email, user in made.items()})
    w = World(portal, ctx, tokens, 0, "")
    org = w.api("POST", "/organisations", "pi@startup.it", name=f"Startup {PAYLOAD}",
                country="IT", type="startup", sector="space")  # fmt: skip
    w.project = w.api("POST", "/projects", "pi@startup.it", title=f"LLM {PAYLOAD}",
                      org_id=org["id"])["id"]  # fmt: skip
    proposal = w.api("POST", "/proposals", "pi@startup.it", project_id=w.project,
                     call_id="it4lia-large-scale", gpu_hours=80000, months=6,
                     abstract=f"Train {PAYLOAD}", declare_civilian_ai_act=True)  # fmt: skip
    assert proposal["state"] == "in_review", proposal
    w.proposal = proposal["id"]
    for n in range(2):
        rid = made[f"r{n}@review.eu"]["id"]
        w.api("POST", f"/proposals/{w.proposal}/reviewers", "op@it4lia.it", reviewer_id=rid)
    return w


def _reviews(ctx: AppContext, proposal: int) -> list[tuple[int, str, int | None]]:
    with ctx.db.session() as session:
        rows = session.execute(
            select(Review.reviewer_id, Review.state, Review.score)
            .where(Review.proposal_id == proposal)
            .order_by(Review.reviewer_id)
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


def test_a_reviewer_sees_only_assigned_proposals_scores_and_declares_a_conflict(
    world: World,
) -> None:
    pid = world.proposal
    before = _reviews(world.ctx, pid)
    client = world.as_user("r2@review.eu")  # a reviewer not assigned to it
    assert "No proposal is assigned to you" in client.get("/review").text
    assert client.get(f"/review/{pid}").status_code == 404
    token = csrf_of(client.get("/review").text)
    assert client.post(f"/review/{pid}", data={"csrf": token, "score": "5"}).status_code == 404

    client = world.as_user("r0@review.eu")
    listed = client.get("/review")
    assert listed.status_code == 200 and f"/review/{pid}" in listed.text
    assert "to review" in listed.text
    page = client.get(f"/review/{pid}")
    assert page.status_code == 200 and "80,000" in page.text
    for text in (listed.text, page.text):  # stored text escaped
        assert "<script>alert" not in text and "&lt;script&gt;" in text
    refused = client.post(f"/review/{pid}", data={"score": "4", "comment": "solid"})
    assert refused.status_code == 403 and _reviews(world.ctx, pid) == before
    token = csrf_of(page.text)
    bad = client.post(f"/review/{pid}", data={"csrf": token, "score": "9"})
    assert bad.status_code == 422 and "score" in bad.text and _reviews(world.ctx, pid) == before
    done = client.post(f"/review/{pid}", data={"csrf": token, "score": "4",
                       "comment": f"solid plan {PAYLOAD}"}, follow_redirects=False)  # fmt: skip
    assert done.status_code == 303 and done.headers["location"] == f"/review/{pid}"
    again = client.get(f"/review/{pid}").text
    assert "4 of 5" in again and "solid plan &lt;script&gt;" in again

    client = world.as_user("r1@review.eu")
    other = client.get(f"/review/{pid}").text
    assert "solid plan" not in other and "r0@review.eu" not in other  # never another's review
    token = csrf_of(other)
    empty = client.post(f"/review/{pid}/conflict", data={"csrf": token, "reason": " "})
    assert empty.status_code == 422 and "conflict" in empty.text
    declared = client.post(f"/review/{pid}/conflict", data={"csrf": token,
                           "reason": "former colleague"}, follow_redirects=False)  # fmt: skip
    assert declared.status_code == 303
    states = {rid: state for rid, state, _ in _reviews(world.ctx, pid)}
    assert sorted(states.values()) == ["conflict", "submitted"]
    assert "conflict declared" in client.get("/review").text

    # neither an applicant nor an operator reviews: 404, not a hint
    for email in ("pi@startup.it", "op@it4lia.it"):
        client = world.as_user(email)
        assert client.get("/review").status_code == 404
        assert client.get(f"/review/{pid}").status_code == 404


def test_an_operator_decides_its_queue_with_fewer_gpu_hours_and_sees_no_other_factory(
    world: World,
) -> None:
    pid = world.proposal
    for n in range(2):
        world.api("POST", f"/proposals/{pid}/reviews", f"r{n}@review.eu", score=4 - n,
                  comment=f"comment {n}")  # fmt: skip
    client = world.as_user("op@jaif.jp")
    queue = client.get("/operate")
    assert queue.status_code == 200 and "No proposal is waiting" in queue.text
    token = csrf_of(queue.text)
    assert client.get(f"/operate/proposals/{pid}").status_code == 404
    other = client.post(f"/operate/proposals/{pid}/decision",
                        data={"csrf": token, "decision": "accept"})  # fmt: skip
    assert other.status_code == 404 and "80,000" not in other.text

    client = world.as_user("op@it4lia.it")
    queue = client.get("/operate")
    assert f"/operate/proposals/{pid}" in queue.text and "2 of 2" in queue.text
    assert re.search(r"\d+ of 10 working days|late by", queue.text), queue.text
    assert "<script>alert" not in queue.text and "&lt;script&gt;" in queue.text
    page = client.get(f"/operate/proposals/{pid}")
    assert page.status_code == 200 and "r0 &lt;r0@review.eu&gt;" in page.text  # operators do
    before = snapshot(world.ctx.db)
    refused = client.post(f"/operate/proposals/{pid}/decision",
                          data={"decision": "accept", "gpu_hours": "60000"})  # fmt: skip
    assert refused.status_code == 403
    token = csrf_of(page.text)
    no_reason = client.post(f"/operate/proposals/{pid}/decision",
                            data={"csrf": token, "decision": "reject"})  # fmt: skip
    assert no_reason.status_code == 422 and "reason" in no_reason.text
    too_much = client.post(
        f"/operate/proposals/{pid}/decision",
        data={"csrf": token, "decision": "accept", "gpu_hours": "90000"},
    )
    assert too_much.status_code == 422 and "gpu_hours" in too_much.text
    assert snapshot(world.ctx.db) == before
    done = client.post(f"/operate/proposals/{pid}/decision", follow_redirects=False,
                       data={"csrf": token, "decision": "accept", "gpu_hours": "60,000",
                             "reason": "partial grant"})  # fmt: skip
    assert done.status_code == 303
    decided = client.get(f"/operate/proposals/{pid}").text
    assert "60,000 GPU-hours granted" in decided and "partial grant" in decided
    assert "No proposal is waiting" in client.get("/operate").text
    with world.ctx.db.session() as session:
        proposal = session.get(Proposal, pid)
        assert proposal is not None and proposal.state == "accepted"
        assert session.scalars(select(Allocation.granted_gpu_hours)).all() == [60000]

    # the applicant reaches none of it; the API shows the reviews without identities
    client = world.as_user("pi@startup.it")
    for path in ("/operate", f"/operate/proposals/{pid}", "/operate/calls", "/dashboard"):
        assert client.get(path).status_code == 404, path
    seen = world.api("GET", f"/proposals/{pid}", "pi@startup.it")
    assert sorted(r["score"] for r in seen["reviews"]) == [3, 4]
    assert "review.eu" not in str(seen) and all("reviewer_id" not in r for r in seen["reviews"])


def test_an_operator_manages_its_calls_allocations_and_agents(world: World) -> None:
    call = "it4lia-large-scale"
    client = world.as_user("op@jaif.jp")
    listed = client.get("/operate/calls").text
    assert "/operate/calls/jaif-" in listed and f"/operate/calls/{call}" not in listed
    token = csrf_of(listed)
    assert client.get(f"/operate/calls/{call}").status_code == 404

    def call_row() -> tuple[Any, ...]:
        with world.ctx.db.session() as session:
            row = session.get(Call, call)
            audited = session.scalar(select(func.count()).select_from(AuditEntry))
            assert row is not None
            return row.state, row.decision, row.offered_gpu_hours, row.closed_reason, audited

    unchanged = call_row()
    data = {"csrf": token, "action": "close", "reason": "x"}
    assert client.post(f"/operate/calls/{call}", data=data).status_code == 404
    assert call_row() == unchanged

    client = world.as_user("op@it4lia.it")
    page = client.get(f"/operate/calls/{call}")
    assert page.status_code == 200 and "Close the call" in page.text
    token = csrf_of(page.text)
    unsent = client.post(f"/operate/calls/{call}", data={"action": "close", "reason": "full"})
    assert unsent.status_code == 403
    no_reason = client.post(f"/operate/calls/{call}", data={"csrf": token, "action": "close"})
    assert no_reason.status_code == 422 and "reason" in no_reason.text
    bad = client.post(f"/operate/calls/{call}", data={"csrf": token, "action": "capacity",
                      "offered_gpu_hours": "lots"})  # fmt: skip
    assert bad.status_code == 422 and "offered_gpu_hours" in bad.text
    assert call_row() == unchanged
    for data in ({"action": "close", "reason": f"full {PAYLOAD}"}, {"action": "manual"},
                 {"action": "capacity", "offered_gpu_hours": "500000"}):  # fmt: skip
        sent = client.post(f"/operate/calls/{call}", data={"csrf": token, **data},
                           follow_redirects=False)  # fmt: skip
        assert sent.status_code == 303, sent.text
    shown = client.get(f"/operate/calls/{call}").text
    assert "Open the call" in shown and "full &lt;script&gt;" in shown and "500,000" in shown
    with world.ctx.db.session() as session:
        row = session.get(Call, call)
        assert row is not None
        assert (row.state, row.decision, row.offered_gpu_hours) == ("closed", "manual", 500000)

    # an allocation of it4lia (a Playground one, decided at once) and its changes
    allocation = world.api("POST", "/proposals", "pi@startup.it", project_id=world.project,
                           call_id="it4lia-playground", gpu_hours=2000, months=2,
                           declare_civilian_ai_act=True)["allocation"]["id"]  # fmt: skip
    assert f"/operate/allocations/{allocation}" in client.get("/operate/allocations").text
    page = client.get(f"/operate/allocations/{allocation}")
    assert page.status_code == 200 and "2,000 granted" in page.text
    for data in ({"action": "top_up", "gpu_hours": "500", "reason": "more"},
                 {"action": "extend", "months": "1", "reason": "late data"},
                 {"action": "suspend", "reason": "misuse"}):  # fmt: skip
        sent = client.post(f"/operate/allocations/{allocation}", data={"csrf": token, **data},
                           follow_redirects=False)  # fmt: skip
        assert sent.status_code == 303, sent.text
    wrong = client.post(f"/operate/allocations/{allocation}",
                        data={"csrf": token, "action": "suspend", "reason": "again"})  # fmt: skip
    assert wrong.status_code == 422 and "suspended" in wrong.text
    with world.ctx.db.session() as session:
        changed = session.get(Allocation, allocation)
        assert changed is not None
        assert (changed.state, changed.granted_gpu_hours) == ("suspended", 2500)
    client = world.as_user("op@jaif.jp")
    assert client.get(f"/operate/allocations/{allocation}").status_code == 404
    assert f"/operate/allocations/{allocation}" not in client.get("/operate/allocations").text

    # site agents: the it4lia agent (a token made) with a job lost there
    world.api("POST", "/agents/it4lia/token", "admin")
    with world.ctx.db.session() as session:
        pk, pi = session.execute(
            select(Project.pk, Project.pi_user_id).where(Project.id == world.project)
        ).one()
        session.add(Job(project_pk=pk, user_id=pi, name="lost", spec="{}", state="queued", gpus=1,
                        nodes=1, time_limit_s=60, reason="lost at it4lia; queued again",
                        submitted_at=world.ctx.clock()))  # fmt: skip
    assert "No site agent" in client.get("/operate/agents").text
    agents = world.as_user("op@it4lia.it").get("/operate/agents").text
    assert "IT4LIA" in agents and "never" in agents and "<strong>1</strong>" in agents


def _usage(world: World, hours: float) -> None:
    """A job of the project that ran and charged `hours` to its Playground allocation."""
    world.api(
        "POST",
        "/proposals",
        "pi@startup.it",
        project_id=world.project,
        months=2,
        call_id="it4lia-playground",
        gpu_hours=2000,
        declare_civilian_ai_act=True,
    )
    now = world.ctx.clock()
    with world.ctx.db.session() as session:
        pk, pi = session.execute(
            select(Project.pk, Project.pi_user_id).where(Project.id == world.project)
        ).one()
        allocation = session.scalars(select(Allocation.id)).one()
        job = Job(project_pk=pk, user_id=pi, name="ran", spec="{}", state="succeeded", gpus=1,
                  nodes=1, time_limit_s=60, submitted_at=now, allocation_id=allocation)  # fmt: skip
        session.add(job)
        session.flush()
        record = UsageRecord(job_id=job.id, allocation_id=allocation, gpus=1,
                             elapsed_s=hours * 3600, gpu_hours=hours, created_at=now)  # fmt: skip
        session.add(record)


def test_the_dashboard_is_the_federation_admins_with_accessible_charts(world: World) -> None:
    _usage(world, 12.5)
    for email in ("op@it4lia.it", "r0@review.eu", "pi@startup.it"):
        assert world.as_user(email).get("/dashboard").status_code == 404, email
    client = world.as_user("admin@localhost")
    page = client.get("/dashboard")
    assert page.status_code == 200, page.text
    text = page.text
    svgs = re.findall(r"<svg[^>]*>", text)
    assert len(svgs) == 6 and all('role="img"' in s and "aria-labelledby" in s for s in svgs)
    assert text.count("<title id=") == 6 and text.count("<desc id=") == 6
    assert text.count("<table>") == 6  # the figures beside each chart
    assert "url(#chart-member-state-hatch)" in text  # used is hatched: readable without colour
    assert '<th scope="row">IT</th>' in text and "12.5" in text and "2,000" in text
    assert "Playground" in text and "IT4LIA" in text
    assert client.get("/dashboard", params={"from": "2026-13-01"}).status_code == 422
    older = client.get("/dashboard", params={"from": "2020-01-01", "to": "2020-12-31"})
    assert older.status_code == 200 and "No figures for this period" in older.text


def test_a_member_sees_its_usage_over_time(world: World) -> None:
    _usage(world, 3.25)
    client = world.as_user("pi@startup.it")
    page = client.get("/usage")
    assert page.status_code == 200 and 'role="img"' in page.text and "3.2" in page.text
    assert "2026-11-16" in page.text  # the week of the usage (Monday), in the table
    daily = client.get("/usage", params={"bucket": "day"})
    assert daily.status_code == 200 and "2026-11-21" in daily.text
    assert client.get("/usage", params={"bucket": "year"}).status_code == 422
    other = world.as_user("op@jaif.jp").get("/usage")
    assert other.status_code == 200 and "No figures for this period" in other.text


def test_a_factory_that_wants_mfa_refuses_a_decision_signed_in_without_it(world: World) -> None:
    """The email link is one factor: an operator signed in with it may look at a proposal
    of a factory whose catalog entry requires MFA, not decide it; the page says how."""
    catalog = world.ctx.catalog
    factories = tuple(
        f.model_copy(update={"require_mfa": True}) if f.id == "it4lia" else f
        for f in catalog.factories
    )
    world.ctx.catalog = catalog.model_copy(update={"factories": factories})
    client = world.as_user("op@it4lia.it")
    page = client.get(f"/operate/proposals/{world.proposal}")
    assert page.status_code == 200
    before = snapshot(world.ctx.db)
    refused = client.post(
        f"/operate/proposals/{world.proposal}/decision",
        data={"csrf": csrf_of(page.text), "decision": "reject", "reason": "no"},
    )
    assert refused.status_code == 403, refused.text[:2000]
    assert "multi-factor" in refused.text
    assert snapshot(world.ctx.db) == before
