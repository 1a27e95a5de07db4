"""The access lifecycle through HTTP: apply, eligibility, review, decisions, allocations,
invitations, PI transfer, final reports and the access report. The real app on SQLite and
PostgreSQL, no mocks; every refused request is checked to have changed nothing."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fabbrica.core.access import DECLARATION
from fabbrica.store.db import Database
from tests.api.helpers import API, JSON, Headers, Response, assert_error, snapshot
from tests.conftest import Clock, bearer

Json = Any


def message(r: Response) -> str:
    text: str = r.json()["error"]["message"]
    return text


def ok(r: Response, status: int = 200) -> Json:
    assert r.status_code == status, r.text
    return r.json()


def at(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def iso(when: dt.datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


# --- people and their organisations -------------------------------------------------------------


@dataclass(frozen=True)
class Person:
    id: int
    email: str
    headers: Headers


@dataclass(frozen=True)
class Applicant:
    pi: Person
    org: int
    project: str


def person(api: TestClient, admin: Headers, email: str, role: str = "user") -> Person:
    body = {"email": email, "name": email.split("@")[0].title(), "role": role}
    made = ok(api.post(f"{API}/users", headers=admin, json=body), 201)
    return Person(made["id"], made["email"], bearer(made["token"]))


def applicant(
    api: TestClient,
    admin: Headers,
    email: str = "giulia@startup.it",
    *,
    country: str = "IT",
    type: str = "startup",
    sector: str | None = "manufacturing",
) -> Applicant:
    pi = person(api, admin, email)
    body = {"name": f"{email} srl", "country": country, "type": type, "sector": sector}
    org = ok(api.post(f"{API}/organisations", headers=pi.headers, json=body), 201)
    project = ok(
        api.post(
            f"{API}/projects",
            headers=pi.headers,
            json={"title": "Italian LLM", "org_id": org["id"]},
        ),
        201,
    )
    return Applicant(pi, org["id"], project["id"])


def application(who: Applicant, call: str = "it4lia-playground", **overrides: Any) -> Json:
    body: dict[str, Any] = {
        "project_id": who.project,
        "call_id": call,
        "gpu_hours": 2000,
        "months": 2,
        "abstract": "Fine-tuning an Italian LLM for manufacturing manuals.",
        "declare_civilian_ai_act": True,
    }
    return body | overrides


def apply(api: TestClient, who: Applicant, call: str = "it4lia-playground", **kw: Any) -> Json:
    r = api.post(f"{API}/proposals", headers=who.pi.headers, json=application(who, call, **kw))
    return ok(r, 201)


def review(api: TestClient, reviewer: Person, proposal: int, score: int) -> Response:
    body = {"score": score, "comment": f"score {score}"}
    r: Response = api.post(
        f"{API}/proposals/{proposal}/reviews", headers=reviewer.headers, json=body
    )
    return r


def decide(api: TestClient, op: Person, proposal: int, **body: Any) -> Response:
    r: Response = api.post(f"{API}/proposals/{proposal}/decision", headers=op.headers, json=body)
    return r


def patch_call(api: TestClient, op: Person, call: str, **body: Any) -> Json:
    return ok(api.patch(f"{API}/calls/{call}", headers=op.headers, json=body))


def proposals_of(api: TestClient, headers: Headers) -> list[Json]:
    found: list[Json] = ok(api.get(f"{API}/proposals", headers=headers))
    return found


@pytest.fixture
def startup(api: TestClient, admin: Headers) -> Applicant:
    return applicant(api, admin)


@pytest.fixture
def op(api: TestClient, admin: Headers) -> Person:
    return person(api, admin, "op@cineca.it", "operator")


# --- Playground: eligibility and the automatic decision ----------------------------------------


def test_an_italian_startup_gets_its_playground_allocation_at_once(
    api: TestClient, startup: Applicant, clock: Clock
) -> None:
    body = application(startup, gpu_hours=2500)
    r = api.post(f"{API}/proposals", headers=startup.pi.headers, json=body)
    proposal = ok(r, 201)
    assert (proposal["state"], proposal["call"], proposal["mode"]) == (
        "accepted",
        "it4lia-playground",
        "playground",
    )
    assert (proposal["project"], proposal["factory"]) == (startup.project, "it4lia")
    assert proposal["auto_decided"] is True
    assert proposal["declaration"] == DECLARATION
    assert proposal["decided_gpu_hours"] == 2500
    submitted, decided = at(proposal["submitted_at"]), at(proposal["decided_at"])
    assert submitted == clock()
    assert dt.timedelta(0) <= decided - submitted <= dt.timedelta(seconds=5)
    allocation = proposal["allocation"]
    assert allocation["gpu_hours"] == 2500
    assert (allocation["used_gpu_hours"], allocation["reserved_gpu_hours"]) == (0, 0)
    assert allocation["remaining_gpu_hours"] == 2500
    assert (allocation["project"], allocation["call"], allocation["state"]) == (
        startup.project,
        "it4lia-playground",
        "active",
    )
    assert at(allocation["valid_from"]) == clock()
    assert at(allocation["valid_until"]) == dt.datetime(2027, 1, 21, 12, tzinfo=dt.UTC)
    assert at(allocation["final_report_due"]) == dt.datetime(2027, 4, 21, 12, tzinfo=dt.UTC)
    # the same, read back
    assert ok(api.get(f"{API}/proposals/{proposal['id']}", headers=startup.pi.headers)) == proposal
    listed = ok(api.get(f"{API}/allocations", headers=startup.pi.headers))
    assert listed == [allocation]
    call = ok(api.get(f"{API}/calls/it4lia-playground", headers=startup.pi.headers))
    assert call["committed_gpu_hours"] == 2500


def test_a_us_organisation_is_refused_naming_the_rule_and_nothing_is_stored(
    api: TestClient, admin: Headers, db: Database
) -> None:
    us = applicant(api, admin, "ceo@startup.us", country="US")
    before = snapshot(db)
    r = api.post(f"{API}/proposals", headers=us.pi.headers, json=application(us))
    assert_error(r, 422, "invalid", "country")
    assert "US is not eligible" in message(r)
    assert "EU member state or a EuroHPC participating state" in message(r)
    assert snapshot(db) == before
    assert proposals_of(api, us.pi.headers) == []
    assert proposals_of(api, admin) == []
    assert ok(api.get(f"{API}/allocations", headers=admin)) == []


@pytest.mark.parametrize("declaration", [None, False], ids=["missing", "false"])
def test_no_declaration_no_proposal(
    api: TestClient, admin: Headers, db: Database, startup: Applicant, declaration: bool | None
) -> None:
    body = application(startup)
    if declaration is None:
        del body["declare_civilian_ai_act"]
    else:
        body["declare_civilian_ai_act"] = declaration
    before = snapshot(db)
    r = api.post(f"{API}/proposals", headers=startup.pi.headers, json=body)
    assert_error(r, 422, "invalid", "declare_civilian_ai_act")
    assert DECLARATION in message(r)
    assert snapshot(db) == before
    assert proposals_of(api, startup.pi.headers) == []
    assert proposals_of(api, admin) == []


def test_a_draft_is_submitted_later_with_the_declaration(
    api: TestClient, startup: Applicant
) -> None:
    draft = apply(api, startup, submit=False, declare_civilian_ai_act=False)
    assert (draft["state"], draft["submitted_at"], draft["allocation"]) == ("draft", None, None)
    url = f"{API}/proposals/{draft['id']}/submit"
    r = api.post(url, headers=startup.pi.headers)
    assert_error(r, 422, "invalid", "declare_civilian_ai_act")
    assert ok(api.get(f"{API}/proposals/{draft['id']}", headers=startup.pi.headers))["state"] == (
        "draft"
    )
    done = ok(api.post(url, headers=startup.pi.headers, params={"declare_civilian_ai_act": True}))
    assert (done["state"], done["allocation"]["gpu_hours"]) == ("accepted", 2000)
    again = api.post(url, headers=startup.pi.headers, params={"declare_civilian_ai_act": True})
    assert_error(again, 409, "conflict", "state")


# --- Large Scale: peer review and the operator's decision ----------------------------------------


def test_large_scale_needs_two_reviews_then_the_operator_grants_less(
    api: TestClient, admin: Headers, db: Database, startup: Applicant, op: Person, clock: Clock
) -> None:
    rev1 = person(api, admin, "rev1@panel.eu", "reviewer")
    rev2 = person(api, admin, "rev2@panel.eu", "reviewer")
    insider = person(api, admin, "insider@panel.eu", "reviewer")
    proposal = apply(api, startup, "it4lia-large-scale", gpu_hours=60_000, months=6)
    pid = proposal["id"]
    assert (proposal["state"], proposal["allocation"], proposal["reviews"]) == (
        "in_review",
        None,
        [],
    )

    seen = ok(review(api, rev1, pid, 4))
    assert seen["state"] == "in_review"
    assert [(x["score"], x["comment"]) for x in seen["reviews"]] == [(4, "score 4")]
    # a second review by the same reviewer replaces the first: still one review
    assert [x["score"] for x in ok(review(api, rev1, pid, 5))["reviews"]] == [5]
    before = snapshot(db)
    r = decide(api, op, pid, decision="accept")
    assert_error(r, 409, "conflict", "reviews")
    assert "1 of the 2 reviews" in message(r)
    assert snapshot(db) == before

    # the insider joins the applicant's project through an invitation: now conflicted
    invited = api.post(
        f"{API}/projects/{startup.project}/invitations",
        headers=startup.pi.headers,
        json={"email": insider.email},
    )
    token = ok(invited, 201)["token"]
    joined = api.post(f"{API}/invitations/accept", headers=insider.headers, json={"token": token})
    assert insider.id in [m["user_id"] for m in ok(joined)["members"]]
    before = snapshot(db)
    r = review(api, insider, pid, 5)
    assert_error(r, 403, "forbidden")
    assert "conflict of interest" in message(r) and "project" in message(r)
    assert snapshot(db) == before
    assigned = api.post(
        f"{API}/proposals/{pid}/reviewers", headers=op.headers, json={"reviewer_id": insider.id}
    )
    assert_error(assigned, 409, "conflict", "reviewer_id")
    assert snapshot(db) == before
    staff_view = ok(api.get(f"{API}/proposals/{pid}", headers=op.headers))
    assert [x["reviewer_id"] for x in staff_view["reviews"]] == [rev1.id]

    clock.advance(days=3)
    assert [x["score"] for x in ok(review(api, rev2, pid, 3))["reviews"]] == [5, 3]
    clock.advance(days=1)
    decided = ok(decide(api, op, pid, decision="accept", gpu_hours=45_000, reason="capacity"))
    assert (decided["state"], decided["auto_decided"]) == ("accepted", False)
    assert (decided["decided_gpu_hours"], decided["decision_reason"]) == (45_000, "capacity")
    assert at(decided["decided_at"]) == clock()
    allocation = decided["allocation"]
    assert (allocation["gpu_hours"], allocation["remaining_gpu_hours"]) == (45_000, 45_000)
    assert at(allocation["valid_until"]) == dt.datetime(2027, 5, 25, 12, tzinfo=dt.UTC)
    mine = ok(api.get(f"{API}/allocations", headers=startup.pi.headers))
    assert [(a["id"], a["gpu_hours"]) for a in mine] == [(allocation["id"], 45_000)]
    call = ok(api.get(f"{API}/calls/it4lia-large-scale", headers=startup.pi.headers))
    assert call["committed_gpu_hours"] == 45_000
    assert_error(decide(api, op, pid, decision="accept"), 409, "conflict", "state")
    assert_error(review(api, rev2, pid, 1), 409, "conflict", "state")


def test_a_low_average_cannot_be_accepted_but_can_be_rejected(
    api: TestClient, admin: Headers, startup: Applicant, op: Person
) -> None:
    revs = [person(api, admin, f"rev{i}@panel.eu", "reviewer") for i in (1, 2)]
    pid = apply(api, startup, "it4lia-large-scale", gpu_hours=80_000, months=12)["id"]
    for reviewer, score in zip(revs, (2, 3), strict=True):
        ok(review(api, reviewer, pid, score))
    r = decide(api, op, pid, decision="accept")
    assert_error(r, 409, "conflict", "reviews")
    assert "2.50" in message(r)
    rejected = ok(decide(api, op, pid, decision="reject", reason="  below the bar  "))
    assert (rejected["state"], rejected["decision_reason"]) == ("rejected", "below the bar")
    assert rejected["allocation"] is None
    assert ok(api.get(f"{API}/allocations", headers=admin)) == []


@pytest.mark.parametrize(
    "body",
    [
        {"decision": "reject"},
        {"decision": "reject", "reason": "   "},
        {"decision": "reject", "reason": ""},
    ],
    ids=["no-reason", "blank", "empty"],
)
def test_a_rejection_needs_a_reason(
    api: TestClient, db: Database, startup: Applicant, op: Person, body: dict[str, Any]
) -> None:
    # Benchmark is decided by an operator without review: the proposal waits, submitted
    proposal = apply(api, startup, "it4lia-benchmark", gpu_hours=500, months=2)
    assert (proposal["state"], proposal["decided_at"]) == ("submitted", None)
    before = snapshot(db)
    assert_error(decide(api, op, proposal["id"], **body), 422, "invalid", "reason")
    assert snapshot(db) == before
    done = ok(decide(api, op, proposal["id"], decision="reject", reason="out of scope"))
    assert (done["state"], done["decision_reason"]) == ("rejected", "out of scope")


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"decision": "accept", "gpu_hours": 501}, 422, "gpu_hours"),
        ({"decision": "accept", "gpu_hours": 0}, 422, "gpu_hours"),
        ({"decision": "accept", "gpu_hours": -1}, 422, "gpu_hours"),
        ({"decision": "accept", "gpu_hours": "all"}, 422, "gpu_hours"),
        ({"decision": "maybe"}, 422, "decision"),
        ({"decision": "accept", "by": "me"}, 422, "by"),
        ({}, 422, "decision"),
    ],
)
def test_malformed_decisions_change_nothing(
    api: TestClient,
    db: Database,
    startup: Applicant,
    op: Person,
    body: dict[str, Any],
    status: int,
    field: str,
) -> None:
    proposal = apply(api, startup, "it4lia-benchmark", gpu_hours=500, months=2)
    before = snapshot(db)
    assert_error(decide(api, op, proposal["id"], **body), status, "invalid", field)
    assert snapshot(db) == before


# --- malformed applications ---------------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    name: str
    status: int
    field: str | None
    overrides: dict[str, Any] | None = None  # changes to a good application
    raw: bytes | None = None  # or the raw body
    says: str = ""  # part of the message


def raw(text: str) -> bytes:
    return text.encode()


GOOD = '"project_id": "{project}", "call_id": "it4lia-playground", "declare_civilian_ai_act": true'
BAD_APPLICATIONS = [
    Bad("negative-gpu-hours", 422, "gpu_hours", {"gpu_hours": -100}),
    Bad("zero-gpu-hours", 422, "gpu_hours", {"gpu_hours": 0}),
    Bad("1e12-gpu-hours", 422, "gpu_hours", {"gpu_hours": 1e12}),
    Bad("nan-gpu-hours", 422, "gpu_hours",
        raw=raw('{' + GOOD + ', "gpu_hours": NaN, "months": 2}')),
    Bad("infinite-gpu-hours", 422, "gpu_hours",
        raw=raw('{' + GOOD + ', "gpu_hours": Infinity, "months": 2}')),
    Bad("above-the-mode", 422, "gpu_hours", {"gpu_hours": 5001}, says="at most 5,000"),
    Bad("gpu-hours-text", 422, "gpu_hours", {"gpu_hours": "lots"}),
    Bad("gpu-hours-null", 422, "gpu_hours", {"gpu_hours": None}),
    Bad("unknown-call", 404, "call_id", {"call_id": "atlantis-playground"}, says="atlantis"),
    Bad("unknown-project", 404, "project_id", {"project_id": "FAB-AIF-2026PG11-0999"}),
    Bad("project-id-number", 422, "project_id", {"project_id": 42}),
    Bad("months-not-offered", 422, "months", {"months": 7}, says="1, 2, 3 months, not 7"),
    Bad("months-zero", 422, "months", {"months": 0}),
    Bad("months-fraction", 422, "months", {"months": 2.5}),
    Bad("months-text", 422, "months", {"months": "two"}),
    Bad("gpu-model-not-offered", 422, "gpu_model", {"gpu_model": "h100"}, says="h100"),
    Bad("gpu-model-number", 422, "gpu_model", {"gpu_model": 100}),
    Bad("abstract-too-long", 422, "abstract", {"abstract": "x" * 20_001}),
    Bad("abstract-list", 422, "abstract", {"abstract": ["a", "b"]}),
    Bad("declaration-list", 422, "declare_civilian_ai_act", {"declare_civilian_ai_act": []}),
    Bad("submit-text", 422, "submit", {"submit": "perhaps"}),
    Bad("unknown-field", 422, "priority", {"priority": "high"}, says="unknown field"),
    Bad("non-utf8", 400, None,
        raw=b'{"project_id": "\xff\xfe", "call_id": "it4lia-playground", "gpu_hours": 5,'
        b' "months": 2}'),
    Bad("truncated-json", 422, None, raw=raw('{' + GOOD + ', "gpu_hours": ')),
    Bad("json-list", 422, None, raw=raw("[]")),
    Bad("empty-body", 422, None, raw=b""),
]  # fmt: skip


@pytest.mark.parametrize("bad", BAD_APPLICATIONS, ids=[b.name for b in BAD_APPLICATIONS])
def test_malformed_applications_are_refused_naming_the_field_and_change_nothing(
    api: TestClient, admin: Headers, db: Database, startup: Applicant, bad: Bad
) -> None:
    headers = startup.pi.headers
    before = snapshot(db)
    if bad.raw is not None:
        content = bad.raw.replace(b"{project}", startup.project.encode())
        r = api.post(f"{API}/proposals", headers={**headers, **JSON}, content=content)
    else:
        r = api.post(
            f"{API}/proposals", headers=headers, json=application(startup, **bad.overrides or {})
        )
    code = {400: "bad_request", 404: "not_found", 422: "invalid"}[bad.status]
    assert_error(r, bad.status, code, bad.field)
    assert bad.says in message(r)
    assert snapshot(db) == before
    assert proposals_of(api, admin) == []


def test_a_10_mb_abstract_is_refused_without_a_500(
    api: TestClient, db: Database, startup: Applicant
) -> None:
    body = json.dumps(application(startup, abstract="a" * (10 * 1024 * 1024))).encode()
    before = snapshot(db)
    r = api.post(f"{API}/proposals", headers={**startup.pi.headers, **JSON}, content=body)
    assert r.status_code in (413, 422), r.status_code
    if r.status_code == 413:
        assert_error(r, 413, "too_large")
    else:
        assert_error(r, 422, "invalid", "abstract")
    assert snapshot(db) == before


@dataclass(frozen=True)
class Nul:
    name: str
    method: str
    url: str
    body: dict[str, Any] | None
    field: str
    postgres_only: bool  # SQLite already answers well


NUL = "a\x00b"
NUL_CASES = [
    Nul("abstract", "POST", "/proposals", {"abstract": NUL}, "abstract", False),
    Nul("organisation-name", "POST", "/organisations",
        {"name": NUL, "country": "IT", "type": "startup"}, "name", False),
    Nul("project-title", "POST", "/projects", {"title": NUL}, "title", False),
    Nul("gpu-model", "POST", "/proposals", {"gpu_model": NUL}, "gpu_model", True),
    Nul("call-id", "POST", "/proposals", {"call_id": NUL}, "call_id", True),
    Nul("project-id", "POST", "/proposals", {"project_id": NUL}, "project_id", True),
    Nul("project-path", "GET", "/projects/a%00b", None, "project_id", True),
    Nul("call-path", "GET", "/calls/a%00b", None, "call_id", True),
    Nul("project-query", "GET", "/proposals?project_id=a%00b", None, "project_id", True),
]  # fmt: skip


@pytest.mark.parametrize("case", NUL_CASES, ids=[c.name for c in NUL_CASES])
def test_nul_characters_are_refused_not_a_500(
    request: pytest.FixtureRequest,
    api: TestClient,
    db: Database,
    startup: Applicant,
    case: Nul,
) -> None:
    body: dict[str, Any] | None = None
    if case.body is not None:
        if case.url == "/proposals":
            body = application(startup) | case.body
        elif case.url == "/projects":
            body = {"org_id": startup.org} | case.body
        else:
            body = case.body
    before = snapshot(db)
    r = api.request(case.method, f"{API}{case.url}", headers=startup.pi.headers, json=body)
    assert r.status_code in (404, 422), r.text
    assert_error(r, r.status_code, r.json()["error"]["code"], case.field)
    assert snapshot(db) == before


# --- calls: closed, manual, capacity ------------------------------------------------------------


def test_a_closed_call_refuses_applications_with_the_operators_reason(
    api: TestClient, db: Database, startup: Applicant, op: Person
) -> None:
    reason = "Fast Lane paused for the Leonardo upgrade"
    call = patch_call(api, op, "it4lia-fast-lane", state="closed", reason=reason)
    assert (call["state"], call["closed_reason"]) == ("closed", reason)
    h = startup.pi.headers
    assert "it4lia-fast-lane" not in [c["id"] for c in ok(api.get(f"{API}/calls", headers=h))]
    closed = ok(api.get(f"{API}/calls", headers=h, params={"state": "closed"}))
    assert {c["id"]: c["closed_reason"] for c in closed}["it4lia-fast-lane"] == reason

    before = snapshot(db)
    body = application(startup, "it4lia-fast-lane", gpu_hours=10_000, months=1)
    r = api.post(f"{API}/proposals", headers=h, json=body)
    assert_error(r, 422, "invalid", "call")
    assert reason in message(r) and "it4lia-fast-lane" in message(r)
    assert snapshot(db) == before

    patch_call(api, op, "it4lia-fast-lane", state="open")
    accepted = ok(api.post(f"{API}/proposals", headers=h, json=body), 201)
    assert (accepted["state"], accepted["allocation"]["gpu_hours"]) == ("accepted", 10_000)


def test_a_playground_switched_to_manual_waits_for_the_operator(
    api: TestClient, startup: Applicant, op: Person, clock: Clock
) -> None:
    call = patch_call(api, op, "it4lia-playground", decision="manual", reason="busy week")
    assert call["decision"] == "manual"
    waiting = apply(api, startup)
    assert (waiting["state"], waiting["decided_at"], waiting["allocation"]) == (
        "submitted",
        None,
        None,
    )
    assert ok(api.get(f"{API}/allocations", headers=startup.pi.headers)) == []
    clock.advance(hours=5)
    decided = ok(decide(api, op, waiting["id"], decision="accept"))
    assert (decided["state"], decided["auto_decided"]) == ("accepted", False)
    assert decided["allocation"]["gpu_hours"] == 2000
    assert at(decided["decided_at"]) - at(decided["submitted_at"]) == dt.timedelta(hours=5)


def test_when_the_offered_capacity_is_used_up_proposals_wait(
    api: TestClient, startup: Applicant, op: Person
) -> None:
    patch_call(api, op, "it4lia-playground", offered_gpu_hours=3000)
    first = apply(api, startup, gpu_hours=2000)
    assert first["state"] == "accepted"
    second = apply(api, startup, gpu_hours=1500)
    assert (second["state"], second["allocation"], second["auto_decided"]) == (
        "submitted",
        None,
        False,
    )
    assert "1,000 GPU-hours left" in second["decision_reason"]
    assert "operator" in second["decision_reason"]
    call = ok(api.get(f"{API}/calls/it4lia-playground", headers=startup.pi.headers))
    assert (call["offered_gpu_hours"], call["committed_gpu_hours"]) == (3000, 2000)
    # what still fits is decided at once
    assert apply(api, startup, gpu_hours=1000)["state"] == "accepted"
    assert apply(api, startup, gpu_hours=1)["state"] == "submitted"
    # an operator may still grant the waiting one
    assert ok(decide(api, op, second["id"], decision="accept"))["state"] == "accepted"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"state": "paused"}, "state"),
        ({"decision": "lottery"}, "decision"),
        ({"offered_gpu_hours": -1}, "offered_gpu_hours"),
        ({"offered_gpu_hours": 1e12}, "offered_gpu_hours"),
        ({"min_reviews": 21}, "min_reviews"),
        ({"min_average_score": 6}, "min_average_score"),
        ({"reason": "x" * 501}, "reason"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_malformed_call_changes_change_nothing(
    api: TestClient, db: Database, op: Person, body: dict[str, Any], field: str
) -> None:
    before = snapshot(db)
    r = api.patch(f"{API}/calls/it4lia-playground", headers=op.headers, json=body)
    assert_error(r, 422, "invalid", field)
    assert snapshot(db) == before
    assert_error(
        api.patch(f"{API}/calls/atlantis-playground", headers=op.headers, json={}),
        404,
        "not_found",
        "call_id",
    )


# --- allocations: operator changes, audit, final report -----------------------------------------


@pytest.fixture
def granted(api: TestClient, startup: Applicant) -> Json:
    allocation: Json = apply(api, startup)["allocation"]
    return allocation


def change(api: TestClient, op: Person, allocation: Json, **body: Any) -> Response:
    url = f"{API}/allocations/{allocation['id']}/changes"
    r: Response = api.post(url, headers=op.headers, json=body)
    return r


def test_operator_changes_are_applied_and_audited(
    api: TestClient, startup: Applicant, op: Person, granted: Json, clock: Clock
) -> None:
    end = at(granted["valid_until"])
    until = end + dt.timedelta(days=10)
    extended = ok(change(api, op, granted, action="extend", reason="late start", until=iso(until)))
    assert at(extended["valid_until"]) == until
    assert at(extended["final_report_due"]) == dt.datetime(2027, 4, 30, 12, tzinfo=dt.UTC)
    topped = ok(change(api, op, granted, action="top_up", reason="more data", gpu_hours=500))
    assert (topped["gpu_hours"], topped["remaining_gpu_hours"]) == (2500, 2500)
    assert ok(change(api, op, granted, action="suspend", reason="abuse?"))["state"] == "suspended"
    assert_error(
        change(api, op, granted, action="suspend", reason="again"), 409, "conflict", "state"
    )
    assert ok(change(api, op, granted, action="resume", reason="all clear"))["state"] == "active"
    clock.advance(days=1)
    ended = ok(change(api, op, granted, action="terminate", reason="project cancelled"))
    assert (ended["state"], at(ended["valid_until"])) == ("terminated", clock())
    assert_error(
        change(api, op, granted, action="extend", reason="oops", months=1), 409, "conflict", "state"
    )

    trail = ok(api.get(f"{API}/allocations/{granted['id']}/audit", headers=startup.pi.headers))
    assert [(e["action"], e["reason"]) for e in trail] == [
        ("create", None),
        ("extend", "late start"),
        ("top_up", "more data"),
        ("suspend", "abuse?"),
        ("resume", "all clear"),
        ("terminate", "project cancelled"),
    ]
    assert [e["actor_id"] for e in trail] == [None] + [op.id] * 5
    before_after = json.loads(trail[2]["detail"])
    assert before_after["before"]["granted_gpu_hours"] == 2000
    assert before_after["after"]["granted_gpu_hours"] == 2500


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"action": "extend", "reason": "r", "until": "2026-11-01T00:00:00Z"}, "until"),
        ({"action": "extend", "reason": "r", "until": "2026-11-21T11:59:59Z"}, "until"),
        ({"action": "extend", "reason": "r", "until": "2026-12-25T00:00:00Z"}, "until"),
        ({"action": "extend", "reason": "r", "until": "next week"}, "until"),
        ({"action": "extend", "reason": "r"}, "until"),
        ({"action": "extend", "reason": "r", "months": 0}, "months"),
        ({"action": "top_up", "reason": "r"}, "gpu_hours"),
        ({"action": "top_up", "reason": "r", "gpu_hours": -5}, "gpu_hours"),
        ({"action": "top_up", "reason": "r", "gpu_hours": 1e12}, "gpu_hours"),
        ({"action": "explode", "reason": "r"}, "action"),
        ({"action": "suspend"}, "reason"),
        ({"action": "suspend", "reason": ""}, "reason"),
        ({"action": "suspend", "reason": "   "}, "reason"),
        ({"action": "suspend", "reason": "r", "force": True}, "force"),
    ],
    ids=[
        "until-past", "until-a-second-ago", "until-before-the-end", "until-text", "no-until",
        "zero-months", "top-up-nothing", "top-up-negative", "top-up-1e12", "unknown-action",
        "no-reason", "empty-reason", "blank-reason", "unknown-field",
    ],
)  # fmt: skip
def test_malformed_allocation_changes_change_nothing(
    api: TestClient, db: Database, op: Person, granted: Json, body: dict[str, Any], field: str
) -> None:
    before = snapshot(db)
    assert_error(change(api, op, granted, **body), 422, "invalid", field)
    assert snapshot(db) == before


@pytest.mark.parametrize(
    "until",
    [
        pytest.param("2030-01-01T00:00:00", id="no-time-zone"),
        pytest.param("9999-12-01T00:00:00Z", id="year-9999"),
    ],
)
def test_extend_to_an_odd_date_is_a_422_not_a_500(
    api: TestClient, db: Database, op: Person, granted: Json, until: str
) -> None:
    before = snapshot(db)
    r = change(api, op, granted, action="extend", reason="r", until=until)
    assert_error(r, 422, "invalid", "until")
    assert snapshot(db) == before


REPORT = "We fine-tuned the model; the factory's support was excellent."


def test_the_final_report(
    api: TestClient, admin: Headers, db: Database, startup: Applicant, op: Person, granted: Json
) -> None:
    url = f"{API}/allocations/{granted['id']}/final-report"
    before = snapshot(db)
    assert_error(
        api.post(url, headers=startup.pi.headers, json={"text": "short"}), 422, "invalid", "text"
    )
    assert_error(api.post(url, headers=op.headers, json={"text": REPORT}), 403, "forbidden")
    assert snapshot(db) == before
    done = ok(api.post(url, headers=startup.pi.headers, json={"text": REPORT}))
    assert done["final_report_submitted"] is True
    trail = ok(api.get(f"{API}/allocations/{granted['id']}/audit", headers=admin))
    assert [e["action"] for e in trail] == ["create", "final_report"]


def test_a_blank_final_report_names_the_text_field(
    api: TestClient, db: Database, startup: Applicant, granted: Json
) -> None:
    url = f"{API}/allocations/{granted['id']}/final-report"
    before = snapshot(db)
    r = api.post(url, headers=startup.pi.headers, json={"text": " " * 30})
    assert_error(r, 422, "invalid", "text")
    assert snapshot(db) == before


def test_an_overdue_final_report_blocks_new_applications(
    api: TestClient, db: Database, startup: Applicant, clock: Clock
) -> None:
    allocation = apply(api, startup, months=1)["allocation"]
    due = at(allocation["final_report_due"])
    assert due == at(allocation["valid_until"]) + dt.timedelta(days=90)  # 21 Dec -> 21 Mar
    clock.now = due  # due, not yet overdue
    assert apply(api, startup)["state"] == "accepted"
    clock.advance(days=1)
    before = snapshot(db)
    r = api.post(f"{API}/proposals", headers=startup.pi.headers, json=application(startup))
    assert_error(r, 422, "invalid", "project_id")
    assert f"final report of project {startup.project} is overdue" in message(r)
    assert "2027-03-21" in message(r)
    assert snapshot(db) == before
    url = f"{API}/allocations/{allocation['id']}/final-report"
    ok(api.post(url, headers=startup.pi.headers, json={"text": REPORT}))
    assert apply(api, startup)["state"] == "accepted"


# --- projects: invitations and the PI -----------------------------------------------------------


def test_an_invitation_is_accepted_by_its_invitee_only(
    api: TestClient, admin: Headers, db: Database, startup: Applicant, clock: Clock
) -> None:
    marco = person(api, admin, "marco@startup.it")
    eve = person(api, admin, "eve@elsewhere.eu")
    r = api.post(
        f"{API}/projects/{startup.project}/invitations",
        headers=startup.pi.headers,
        json={"email": "Marco@Startup.IT"},
    )
    invitation = ok(r, 201)
    assert (invitation["project"], invitation["email"]) == (startup.project, "marco@startup.it")
    assert at(invitation["expires_at"]) == clock() + dt.timedelta(days=14)
    token = invitation["token"]

    before = snapshot(db)
    r = api.post(f"{API}/invitations/accept", headers=eve.headers, json={"token": token})
    assert_error(r, 404, "not_found", "token")
    assert snapshot(db) == before
    assert_error(
        api.get(f"{API}/projects/{startup.project}", headers=eve.headers),
        404,
        "not_found",
        "project_id",
    )
    assert_error(
        api.get(f"{API}/projects/{startup.project}", headers=marco.headers),
        404,
        "not_found",
        "project_id",
    )

    joined = ok(api.post(f"{API}/invitations/accept", headers=marco.headers, json={"token": token}))
    members = {m["user_id"]: m["role"] for m in joined["members"]}
    assert members == {startup.pi.id: "pi", marco.id: "member"}
    assert ok(api.get(f"{API}/projects", headers=marco.headers))[0]["id"] == startup.project
    again = api.post(f"{API}/invitations/accept", headers=marco.headers, json={"token": token})
    assert_error(again, 409, "conflict", "token")
    # a member is not the PI
    assert_error(
        api.post(
            f"{API}/projects/{startup.project}/invitations",
            headers=marco.headers,
            json={"email": "x@y.it"},
        ),
        403,
        "forbidden",
    )
    r = api.post(f"{API}/proposals", headers=marco.headers, json=application(startup))
    assert_error(r, 403, "forbidden")
    # inviting a member again is a conflict; an invitation expires after 14 days
    r = api.post(
        f"{API}/projects/{startup.project}/invitations",
        headers=startup.pi.headers,
        json={"email": marco.email},
    )
    assert_error(r, 409, "conflict", "email")
    late = ok(
        api.post(
            f"{API}/projects/{startup.project}/invitations",
            headers=startup.pi.headers,
            json={"email": eve.email},
        ),
        201,
    )
    clock.advance(days=14)
    r = api.post(f"{API}/invitations/accept", headers=eve.headers, json={"token": late["token"]})
    assert_error(r, 409, "conflict", "token")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "not-an-email"}, "email"),
        ({"email": "a\x00b@startup.it"}, "email"),
        ({"email": "marco@startup.it", "role": "pi"}, "role"),
        ({}, "email"),
    ],
)
def test_malformed_invitations_change_nothing(
    api: TestClient, db: Database, startup: Applicant, body: dict[str, Any], field: str
) -> None:
    before = snapshot(db)
    r = api.post(
        f"{API}/projects/{startup.project}/invitations", headers=startup.pi.headers, json=body
    )
    assert_error(r, 422, "invalid", field)
    assert snapshot(db) == before


def test_the_pi_hands_the_role_to_a_member(
    api: TestClient, admin: Headers, db: Database, startup: Applicant
) -> None:
    marco = person(api, admin, "marco@startup.it")
    stranger = person(api, admin, "stranger@startup.it")
    token = ok(
        api.post(
            f"{API}/projects/{startup.project}/invitations",
            headers=startup.pi.headers,
            json={"email": marco.email},
        ),
        201,
    )["token"]
    ok(api.post(f"{API}/invitations/accept", headers=marco.headers, json={"token": token}))
    url = f"{API}/projects/{startup.project}/pi"

    before = snapshot(db)
    r = api.post(url, headers=startup.pi.headers, json={"user_id": stranger.id})
    assert_error(r, 422, "invalid", "user_id")
    assert_error(api.post(url, headers=marco.headers, json={"user_id": marco.id}), 403, "forbidden")
    assert snapshot(db) == before

    project = ok(api.post(url, headers=startup.pi.headers, json={"user_id": marco.id}))
    assert project["pi_user_id"] == marco.id
    roles = {m["user_id"]: m["role"] for m in project["members"]}
    assert roles == {startup.pi.id: "member", marco.id: "pi"}
    # the new PI applies for the project
    proposal = ok(
        api.post(f"{API}/proposals", headers=marco.headers, json=application(startup)), 201
    )
    assert proposal["state"] == "accepted"
    # the new PI cannot be removed; the old one, now a member, can be (and still sees the
    # project as an admin of its organisation)
    members = f"{API}/projects/{startup.project}/members"
    assert_error(
        api.delete(f"{members}/{marco.id}", headers=marco.headers), 409, "conflict", "user_id"
    )
    assert_error(
        api.delete(f"{members}/{stranger.id}", headers=marco.headers), 404, "not_found", "user_id"
    )
    left = ok(api.delete(f"{members}/{startup.pi.id}", headers=marco.headers))
    assert [(m["user_id"], m["role"]) for m in left["members"]] == [(marco.id, "pi")]
    assert ok(api.get(f"{API}/projects/{startup.project}", headers=marco.headers)) == left
    assert ok(api.get(f"{API}/projects/{startup.project}", headers=startup.pi.headers)) == left


# --- the access report ---------------------------------------------------------------------------


def test_the_access_report_counts_and_times_decisions(
    api: TestClient, admin: Headers, startup: Applicant, op: Person, clock: Clock
) -> None:
    german = applicant(api, admin, "cto@sme.de", country="DE", type="sme", sector=None)
    apply(api, startup)  # Playground, decided at once
    patch_call(api, op, "it4lia-playground", decision="manual")
    waits = apply(api, german)
    clock.advance(hours=3)
    ok(decide(api, op, waits["id"], decision="accept"))  # 3 hours
    refused = apply(api, german)
    clock.advance(hours=1)
    ok(decide(api, op, refused["id"], decision="reject", reason="duplicate"))  # 1 hour
    apply(api, startup, "it4lia-large-scale", gpu_hours=50_000, months=3)  # in review
    apply(api, startup, submit=False)  # drafts are left out
    r = api.post(f"{API}/proposals", headers=german.pi.headers, json=application(german, months=9))
    assert_error(r, 422, "invalid", "months")  # refused: never stored, never counted

    report = ok(api.get(f"{API}/reports/access", headers=op.headers))
    assert report == {
        "proposals": 4,
        "by_mode": {"large_scale": 1, "playground": 3},
        "by_state": {"accepted": 2, "in_review": 1, "rejected": 1},
        "by_country": {"DE": 2, "IT": 2},
        "by_organisation_type": {"sme": 2, "startup": 2},
        "by_sector": {"manufacturing": 2, "none": 2},
        "decision_time": {"playground": {"decided": 3, "median_seconds": 3600.0}},
    }
    assert ok(api.get(f"{API}/reports/access", headers=admin)) == report
    assert_error(api.get(f"{API}/reports/access", headers=startup.pi.headers), 403, "forbidden")
