"""Tenant isolation and roles on every route of the access lifecycle, through HTTP.

Two tenants (A and B), each with an organisation, a project, an accepted Playground proposal
with its allocation, a Large Scale proposal in review (two reviews) and a draft; reviewers,
an operator, a member of A's project and a pending invitation. User B then tries every read
and write on A's objects: each answers exactly like an object that does not exist (or 403
where only staff may act), and the database does not change by a single row. The same
request from the rightful actor succeeds, so the refusals are not an artefact of a broken
request. The table of cases is checked against the app's OpenAPI paths: a new route without
a case fails `test_every_access_route_has_an_isolation_case`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fabbrica.store.db import Database
from tests.api.helpers import API, Headers, Response, assert_error, snapshot
from tests.conftest import bearer

Json = Any

# Routes that are not part of the access lifecycle (covered by tests/api/test_api.py).
NOT_ACCESS_ROUTES = {
    # jobs: isolation is tested in tests/api/test_jobs_api.py
    ("POST", "/jobs"),
    ("GET", "/jobs"),
    ("GET", "/jobs/{job_id}"),
    ("POST", "/jobs/{job_id}/cancel"),
    ("POST", "/jobs/{job_id}/cancel-array"),  # arrays: tests/api/test_job_arrays.py
    ("POST", "/job-batches"),
    ("GET", "/jobs/{job_id}/logs"),
    ("GET", "/jobs/{job_id}/outputs"),
    ("GET", "/usage"),
    # templates: the same for every user; a job made from one: tests/cli/test_templates_e2e.py
    ("GET", "/templates"),
    ("GET", "/templates/{name}"),
    ("POST", "/templates/{name}/spec"),
    ("POST", "/templates/{name}/jobs"),
    # notebooks: their member only, tested in tests/api/test_notebooks_api.py
    ("POST", "/notebooks"),
    ("GET", "/notebooks"),
    ("GET", "/notebooks/{job_id}"),
    # data sets: isolation is tested in tests/api/test_datasets_api.py
    ("POST", "/dataset-uploads"),
    ("GET", "/dataset-uploads/{upload_id}"),
    ("HEAD", "/dataset-uploads/{upload_id}"),
    ("PUT", "/dataset-uploads/{upload_id}"),
    ("POST", "/dataset-uploads/{upload_id}/commit"),
    ("GET", "/datasets"),
    ("GET", "/datasets/{dataset_id}"),
    ("GET", "/datasets/{dataset_id}/croissant.json"),
    ("GET", "/datasets/{dataset_id}/versions/{version}/file"),
    ("DELETE", "/datasets/{dataset_id}"),
    # models: isolation is tested in tests/api/test_models_api.py
    ("GET", "/models"),
    ("GET", "/models/{name}/versions/{version}"),
    ("GET", "/models/{name}/versions/{version}/card"),
    ("GET", "/models/{name}/versions/{version}/files"),
    # site agents: isolation is tested in tests/api/test_agents_api.py
    ("POST", "/agents/{factory_id}/token"),
    ("GET", "/agents"),
    ("PUT", "/agents/{factory_id}/usernames"),
    ("POST", "/agent/sync"),
    ("GET", "/agent/accounts"),
    ("GET", "/agent/jobs/{job_id}/workdir"),
    ("POST", "/agent/jobs/{job_id}/log"),
    ("GET", "/agent/jobs/{job_id}/objects/{sha256}"),
    ("POST", "/agent/jobs/{job_id}/checkpoint"),
    ("GET", "/agent/jobs/{job_id}/checkpoint"),
    ("GET", "/sectors"),
    ("GET", "/health"),
    ("GET", "/factories"),
    ("GET", "/factories/{factory_id}"),
    ("GET", "/access-modes"),
    ("GET", "/me"),
    ("GET", "/users"),
    ("POST", "/users"),
    ("PUT", "/users/{user_id}/factories"),
    ("POST", "/users/{user_id}/suspend"),  # admins only: tests/api/test_operator_scope.py
    ("POST", "/users/{user_id}/reactivate"),  # operator scope: tests/api/test_operator_scope.py
    ("GET", "/users/{user_id}"),
    ("GET", "/users/{user_id}/identities"),  # tests/api/test_identities_api.py
    ("DELETE", "/users/{user_id}/identities/{identity_id}"),
    ("GET", "/auth/providers"),  # no token: tests/identity/test_cli_login.py
    ("POST", "/auth/device"),
    ("POST", "/tokens"),
    ("GET", "/tokens"),
    ("DELETE", "/tokens/{token_id}"),
}


def ok(r: Response, status: int = 200) -> Json:
    assert r.status_code == status, r.text
    return r.json()


def create_user(
    api: TestClient, admin: Headers, email: str, role: str = "user", factories: Json = None
) -> Json:
    name = email.split("@")[0].title()
    body = {"email": email, "name": name, "role": role}
    if factories is not None:
        body["factories"] = factories
    return ok(api.post(f"{API}/users", headers=admin, json=body), 201)


# --- the world --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refs:
    """The ids a request names: A's objects, or ghosts that do not exist."""

    org: int
    project: str
    play: int  # an accepted Playground proposal
    review: int  # a Large Scale proposal in review, with two reviews
    draft: int  # a draft (not submitted)
    alloc: int  # the Playground proposal's allocation
    member: int  # a member (not the PI) of the project
    invitation: str  # the token of a pending invitation to the project
    reviewer: int  # a reviewer with no review of `review` yet (and in no call's pool)


@dataclass(frozen=True)
class Tenant:
    key: str
    user_id: int
    headers: Headers
    org: int
    org_name: str
    project: str
    play: int
    review: int
    draft: int
    alloc: int
    abstract: str


@dataclass
class World:
    a: Tenant
    b: Tenant
    actors: dict[str, Headers]
    ids: dict[str, int]
    a_refs: Refs
    ghost: Refs = field(init=False)

    def __post_init__(self) -> None:
        self.ghost = Refs(
            org=900_001,
            project="FAB-AIF-2026PG11-9999",
            play=900_002,
            review=900_003,
            draft=900_004,
            alloc=900_005,
            member=self.a_refs.member,
            invitation="x" * len(self.a_refs.invitation),
            reviewer=self.a_refs.reviewer,
        )

    def markers(self, tenant: Tenant) -> list[str]:
        """Strings that only `tenant`'s data contains."""
        return [tenant.project, tenant.org_name, tenant.abstract, f"pi@{tenant.key}.example"]


def make_tenant(api: TestClient, admin: Headers, key: str, country: str) -> Tenant:
    user = create_user(api, admin, f"pi@{key}.example")
    h = bearer(user["token"])
    org_name = f"{key.title()} Robotics srl"
    org = ok(
        api.post(
            f"{API}/organisations",
            headers=h,
            json={"name": org_name, "country": country, "type": "startup", "sector": "space"},
        ),
        201,
    )
    project = ok(
        api.post(f"{API}/projects", headers=h, json={"title": f"{key} LLM", "org_id": org["id"]}),
        201,
    )["id"]
    abstract = f"SECRET-ABSTRACT-OF-{key.upper()}"

    def apply(call: str, gpu_hours: float, months: int, submit: bool = True) -> Json:
        body = {
            "project_id": project,
            "call_id": call,
            "gpu_hours": gpu_hours,
            "months": months,
            "abstract": abstract,
            "declare_civilian_ai_act": True,
            "submit": submit,
        }
        return ok(api.post(f"{API}/proposals", headers=h, json=body), 201)

    play = apply("it4lia-playground", 1000, 2)
    assert play["state"] == "accepted" and play["allocation"] is not None
    review = apply("it4lia-large-scale", 60_000, 6)
    assert review["state"] == "in_review"
    draft = apply("jaif-fast-lane", 2000, 1, submit=False)
    assert draft["state"] == "draft"
    return Tenant(
        key=key,
        user_id=user["id"],
        headers=h,
        org=org["id"],
        org_name=org_name,
        project=project,
        play=play["id"],
        review=review["id"],
        draft=draft["id"],
        alloc=play["allocation"]["id"],
        abstract=abstract,
    )


@pytest.fixture
def world(api: TestClient, admin: Headers) -> World:
    a = make_tenant(api, admin, "alpha", "IT")
    b = make_tenant(api, admin, "beta", "DE")
    users = {
        "op": create_user(api, admin, "op@factory.example", "operator", ["it4lia"]),
        "rev1": create_user(api, admin, "rev1@panel.example", "reviewer"),
        "rev2": create_user(api, admin, "rev2@panel.example", "reviewer"),
        "rev3": create_user(api, admin, "rev3@panel.example", "reviewer"),
        "dave": create_user(api, admin, "dave@alpha.example"),
        "carol": create_user(api, admin, "carol@alpha.example"),
    }
    actors = {name: bearer(u["token"]) for name, u in users.items()}
    actors |= {"A": a.headers, "B": b.headers, "admin": admin}
    ids = {name: u["id"] for name, u in users.items()} | {"A": a.user_id, "B": b.user_id}
    for tenant in (a, b):
        for reviewer, score in (("rev1", 4), ("rev2", 5)):
            body = {"score": score, "comment": f"{reviewer} thinks so"}
            r = api.post(
                f"{API}/proposals/{tenant.review}/reviews", headers=actors[reviewer], json=body
            )
            assert ok(r)["state"] == "in_review"
    # dave joins A's project; carol's invitation is pending
    for email in ("dave@alpha.example", "carol@alpha.example"):
        r = api.post(
            f"{API}/projects/{a.project}/invitations", headers=a.headers, json={"email": email}
        )
        token = ok(r, 201)["token"]
        if email.startswith("dave"):
            ok(api.post(f"{API}/invitations/accept", headers=actors["dave"], json={"token": token}))
    # carol is also added to A's organisation, and has not joined yet
    ok(
        api.post(
            f"{API}/organisations/{a.org}/members",
            headers=a.headers,
            json={"email": "carol@alpha.example"},
        )
    )
    a_refs = Refs(
        org=a.org,
        project=a.project,
        play=a.play,
        review=a.review,
        draft=a.draft,
        alloc=a.alloc,
        member=ids["dave"],
        invitation=token,
        reviewer=ids["rev3"],
    )
    return World(a=a, b=b, actors=actors, ids=ids, a_refs=a_refs)


# --- the table of cases -----------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One request B makes on A's objects, and the rightful actor's control."""

    name: str
    method: str
    route: str  # the OpenAPI path (under /api/v1)
    url: Callable[[Refs], str]
    body: Callable[[Refs], Json] | None = None
    status: int = 404  # what B gets
    field: str | None = None  # the error's field for B
    control: str = "A"  # who may do it
    control_status: int = 200

    @property
    def code(self) -> str:
        return {403: "forbidden", 404: "not_found"}.get(self.status, "ok")


REPORT = "The model reached the target quality; thanks to the factory staff."
# A's project holds a live it4lia Playground allocation: one per project and call, so the
# control applies to Fast Lane
APPLY = {"call_id": "it4lia-fast-lane", "gpu_hours": 500, "months": 1}


def _apply(r: Refs) -> Json:
    return {"project_id": r.project, **APPLY, "declare_civilian_ai_act": True}


CASES = [
    # organisations
    Case("create-org", "POST", "/organisations", lambda r: "/organisations",
         lambda r: {"name": "Alpha Robotics srl", "country": "IT", "type": "startup"},
         status=201, control_status=201),
    Case("add-org-member", "POST", "/organisations/{org_id}/members",
         lambda r: f"/organisations/{r.org}/members", lambda r: {"email": "pi@beta.example"},
         field="org_id"),
    Case("get-org", "GET", "/organisations/{org_id}", lambda r: f"/organisations/{r.org}",
         field="org_id"),
    Case("join-org", "POST", "/organisations/{org_id}/join",
         lambda r: f"/organisations/{r.org}/join", lambda r: {}, field="org_id", control="carol"),
    Case("create-project-in-org", "POST", "/projects", lambda r: "/projects",
         lambda r: {"title": "intruder", "org_id": r.org}, field="org_id", control_status=201),
    # projects, invitations, members, PI transfer
    Case("get-project", "GET", "/projects/{project_id}", lambda r: f"/projects/{r.project}",
         field="project_id", control="dave"),
    Case("invite", "POST", "/projects/{project_id}/invitations",
         lambda r: f"/projects/{r.project}/invitations",
         lambda r: {"email": "mallory@beta.example"}, field="project_id", control_status=201),
    Case("accept-invitation", "POST", "/invitations/accept", lambda r: "/invitations/accept",
         lambda r: {"token": r.invitation}, field="token", control="carol"),
    Case("remove-member", "DELETE", "/projects/{project_id}/members/{user_id}",
         lambda r: f"/projects/{r.project}/members/{r.member}", field="project_id"),
    Case("transfer-pi", "POST", "/projects/{project_id}/pi", lambda r: f"/projects/{r.project}/pi",
         lambda r: {"user_id": r.member}, field="project_id"),
    # proposals
    Case("apply-for-project", "POST", "/proposals", lambda r: "/proposals", _apply,
         field="project_id", control_status=201),
    Case("get-accepted", "GET", "/proposals/{proposal_id}", lambda r: f"/proposals/{r.play}",
         field="proposal_id"),
    Case("get-in-review", "GET", "/proposals/{proposal_id}", lambda r: f"/proposals/{r.review}",
         field="proposal_id"),
    Case("get-draft", "GET", "/proposals/{proposal_id}", lambda r: f"/proposals/{r.draft}",
         field="proposal_id"),
    Case("submit-draft", "POST", "/proposals/{proposal_id}/submit",
         lambda r: f"/proposals/{r.draft}/submit?declare_civilian_ai_act=true",
         field="proposal_id"),
    Case("withdraw-in-review", "POST", "/proposals/{proposal_id}/withdraw",
         lambda r: f"/proposals/{r.review}/withdraw", field="proposal_id"),
    Case("withdraw-draft", "POST", "/proposals/{proposal_id}/withdraw",
         lambda r: f"/proposals/{r.draft}/withdraw", field="proposal_id"),
    Case("review-score", "POST", "/proposals/{proposal_id}/reviews",
         lambda r: f"/proposals/{r.review}/reviews", lambda r: {"score": 1},
         field="proposal_id", control="rev1"),
    Case("review-conflict", "POST", "/proposals/{proposal_id}/reviews",
         lambda r: f"/proposals/{r.review}/reviews", lambda r: {"conflict": "a competitor"},
         field="proposal_id", control="rev1"),
    Case("assign-reviewer", "POST", "/proposals/{proposal_id}/reviewers",
         lambda r: f"/proposals/{r.review}/reviewers", lambda r: {"reviewer_id": r.reviewer},
         field="proposal_id", control="op"),
    Case("decide-accept", "POST", "/proposals/{proposal_id}/decision",
         lambda r: f"/proposals/{r.review}/decision", lambda r: {"decision": "accept"},
         status=403, control="op"),
    Case("decide-reject", "POST", "/proposals/{proposal_id}/decision",
         lambda r: f"/proposals/{r.review}/decision",
         lambda r: {"decision": "reject", "reason": "out of scope"}, status=403, control="op"),
    # allocations
    Case("get-allocation", "GET", "/allocations/{allocation_id}",
         lambda r: f"/allocations/{r.alloc}", field="allocation_id"),
    Case("suspend-allocation", "POST", "/allocations/{allocation_id}/changes",
         lambda r: f"/allocations/{r.alloc}/changes",
         lambda r: {"action": "suspend", "reason": "abuse"}, status=403, control="op"),
    Case("top-up-allocation", "POST", "/allocations/{allocation_id}/changes",
         lambda r: f"/allocations/{r.alloc}/changes",
         lambda r: {"action": "top_up", "reason": "more", "gpu_hours": 100},
         status=403, control="op"),
    Case("final-report", "POST", "/allocations/{allocation_id}/final-report",
         lambda r: f"/allocations/{r.alloc}/final-report", lambda r: {"text": REPORT},
         field="allocation_id"),
    Case("allocation-audit", "GET", "/allocations/{allocation_id}/audit",
         lambda r: f"/allocations/{r.alloc}/audit", field="allocation_id"),
    # listings filtered on A's project
    Case("proposals-of-project", "GET", "/proposals",
         lambda r: f"/proposals?project_id={r.project}", field="project_id"),
    Case("allocations-of-project", "GET", "/allocations",
         lambda r: f"/allocations?project_id={r.project}", field="project_id"),
    # listings: 200, never with A's objects
    Case("list-orgs", "GET", "/organisations", lambda r: "/organisations", status=200),
    Case("list-projects", "GET", "/projects", lambda r: "/projects", status=200),
    Case("list-projects-of-org", "GET", "/projects", lambda r: f"/projects?org_id={r.org}",
         status=200),
    Case("list-proposals", "GET", "/proposals", lambda r: "/proposals", status=200),
    Case("list-proposals-in-review", "GET", "/proposals", lambda r: "/proposals?state=in_review",
         status=200),
    Case("list-allocations", "GET", "/allocations", lambda r: "/allocations", status=200),
    Case("list-notices", "GET", "/notices", lambda r: "/notices", status=200),
    # calls are public to every user; only staff change them
    Case("list-calls", "GET", "/calls", lambda r: "/calls?state=all", status=200),
    Case("get-call", "GET", "/calls/{call_id}", lambda r: "/calls/it4lia-large-scale", status=200),
    Case("close-call", "PATCH", "/calls/{call_id}", lambda r: "/calls/it4lia-playground",
         lambda r: {"state": "closed", "reason": "maintenance"}, status=403, control="op"),
    Case("add-call-reviewer", "POST", "/calls/{call_id}/reviewers",
         lambda r: "/calls/it4lia-large-scale/reviewers", lambda r: {"user_id": r.reviewer},
         status=403, control="op"),
    Case("access-report", "GET", "/reports/access", lambda r: "/reports/access", status=403,
         control="op"),
    Case("federation-report", "GET", "/reports/federation", lambda r: "/reports/federation",
         status=403, control="op"),
]  # fmt: skip


def send(api: TestClient, method: str, url: str, headers: Headers, body: Json = None) -> Response:
    r: Response
    if body is None:
        r = api.request(method, f"{API}{url}", headers=headers)
    else:
        r = api.request(method, f"{API}{url}", headers=headers, json=body)
    return r


def request(api: TestClient, case: Case, headers: Headers, refs: Refs) -> Response:
    return send(api, case.method, case.url(refs), headers, case.body(refs) if case.body else None)


def assert_only_added(
    before: dict[str, list[tuple[Any, ...]]], after: dict[str, list[tuple[Any, ...]]]
) -> None:
    """Rows were added, none changed or removed."""
    for table, rows in before.items():
        gone = set(rows) - set(after[table])
        assert not gone, f"{table}: rows changed or removed: {gone}"


def without_numbers(message: str) -> str:
    return re.sub(r"\d+", "N", message)


# --- the coverage check -----------------------------------------------------------------------


def test_every_access_route_has_an_isolation_case(api: TestClient) -> None:
    spec = api.get("/openapi.json").json()
    routes = {
        (method.upper(), path.removeprefix(API))
        for path, operations in spec["paths"].items()
        for method in operations
    }
    assert routes >= NOT_ACCESS_ROUTES  # the exclusions are real routes
    covered = {(c.method, c.route) for c in CASES}
    assert covered <= routes, f"cases for routes that do not exist: {covered - routes}"
    missing = routes - NOT_ACCESS_ROUTES - covered
    assert not missing, f"routes without a tenant-isolation case: {sorted(missing)}"
    names = [c.name for c in CASES]
    assert len(names) == len(set(names))


# --- B on A's objects ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_another_tenant_cannot_reach_or_change_a_tenants_objects(
    api: TestClient, db: Database, world: World, case: Case
) -> None:
    before = snapshot(db)
    r = request(api, case, world.b.headers, world.a_refs)
    if case.status == 201:  # B creates something of B's own, next to A's
        assert r.status_code == 201, r.text
        assert_only_added(before, snapshot(db))
        assert world.a.project not in r.text and "pi@alpha.example" not in r.text
        before = snapshot(db)
    elif case.status == 200:
        assert snapshot(db) == before, f"B's {case.name} changed the database"
        assert r.status_code == 200, r.text
        for marker in world.markers(world.a):
            assert marker not in r.text, f"{case.name} shows B {marker!r}"
    else:
        assert snapshot(db) == before, f"B's {case.name} changed the database"
        assert_error(r, case.status, case.code, case.field)
        for marker in world.markers(world.a)[1:]:  # the message may echo the id B sent
            assert marker not in r.text
        # A's object answers exactly like one that does not exist
        ghost = request(api, case, world.b.headers, world.ghost)
        assert snapshot(db) == before
        assert_error(ghost, case.status, case.code, case.field)
        assert without_numbers(ghost.json()["error"]["message"]) == without_numbers(
            r.json()["error"]["message"]
        )

    # the same request from the rightful actor works: the refusal was about who asked
    control = request(api, case, world.actors[case.control], world.a_refs)
    assert control.status_code == case.control_status, control.text
    if case.method == "GET":
        assert snapshot(db) == before
    else:
        assert snapshot(db) != before, f"the control of {case.name} changed nothing"


def ids_of(api: TestClient, headers: Headers, url: str) -> list[Any]:
    return [item["id"] for item in ok(send(api, "GET", url, headers))]


def test_listings_show_each_user_only_their_own_objects(api: TestClient, world: World) -> None:
    a, b = world.a, world.b
    for me, other in ((a, b), (b, a)):
        h = me.headers
        assert ids_of(api, h, "/organisations") == [me.org]
        assert ids_of(api, h, "/projects") == [me.project]
        assert ids_of(api, h, f"/projects?org_id={me.org}") == [me.project]
        assert ids_of(api, h, f"/projects?org_id={other.org}") == []
        mine = sorted([me.play, me.review, me.draft])
        assert ids_of(api, h, "/proposals") == mine
        assert ids_of(api, h, f"/proposals?project_id={me.project}") == mine
        assert ids_of(api, h, "/proposals?state=in_review") == [me.review]
        assert ids_of(api, h, "/proposals?state=accepted") == [me.play]
        assert ids_of(api, h, "/allocations") == [me.alloc]
        assert ids_of(api, h, f"/allocations?project_id={me.project}") == [me.alloc]
        for url in (
            f"/proposals?project_id={other.project}",
            f"/allocations?project_id={other.project}",
        ):
            assert_error(send(api, "GET", url, h), 404, "not_found", "project_id")

    # a member of A's project sees the project and its proposals, not the organisation
    dave = world.actors["dave"]
    assert ids_of(api, dave, "/organisations") == []
    assert ids_of(api, dave, "/projects") == [a.project]
    assert ids_of(api, dave, "/proposals") == sorted([a.play, a.review, a.draft])
    assert ids_of(api, dave, "/allocations") == [a.alloc]
    # an invitation not yet accepted gives nothing; neither does the reviewer role
    for name in ("carol", "rev1"):
        for url in ("/organisations", "/projects", "/proposals", "/allocations"):
            assert ids_of(api, world.actors[name], url) == [], (name, url)
    # staff see both tenants (an operator of it4lia: not their drafts to jaif)
    for name, proposals in (("op", 4), ("admin", 6)):
        staff = world.actors[name]
        assert ids_of(api, staff, "/organisations") == [a.org, b.org]
        assert ids_of(api, staff, "/projects") == [a.project, b.project]
        assert ids_of(api, staff, "/allocations") == [a.alloc, b.alloc]
        assert len(ids_of(api, staff, "/proposals")) == proposals


# --- a reviewer reaches proposals in review, and nothing else of a tenant ---------------------


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/organisations/{org}", "org_id"),
        ("/projects/{project}", "project_id"),
        ("/proposals/{play}", "proposal_id"),
        ("/proposals/{draft}", "proposal_id"),
        ("/allocations/{alloc}", "allocation_id"),
        ("/allocations/{alloc}/audit", "allocation_id"),
        ("/proposals?project_id={project}", "project_id"),
        ("/allocations?project_id={project}", "project_id"),
    ],
)
def test_a_reviewer_sees_nothing_of_a_tenant_but_proposals_in_review(
    api: TestClient, db: Database, world: World, url: str, field: str
) -> None:
    refs = world.a_refs
    values = {"org": refs.org, "project": refs.project, "play": refs.play}
    values |= {"draft": refs.draft, "alloc": refs.alloc}
    before = snapshot(db)
    r = send(api, "GET", url.format(**values), world.actors["rev1"])
    assert_error(r, 404, "not_found", field)
    assert snapshot(db) == before
    # what a reviewer is there for: the proposal in review, without the reviewers' names
    seen = ok(send(api, "GET", f"/proposals/{refs.review}", world.actors["rev1"]))
    assert seen["state"] == "in_review"
    assert all("reviewer_id" not in review for review in seen["reviews"])


def test_a_reviewer_cannot_open_an_accepted_proposal_by_declaring_a_conflict(
    api: TestClient, db: Database, world: World
) -> None:
    before = snapshot(db)
    r = send(
        api,
        "POST",
        f"/proposals/{world.a.play}/reviews",
        world.actors["rev1"],
        {"conflict": "I want to read it"},
    )
    assert r.status_code in (404, 409), r.text
    assert world.a.abstract not in r.text and world.a.project not in r.text
    assert snapshot(db) == before


def test_an_organisation_admin_cannot_enrol_other_peoples_accounts(
    api: TestClient, world: World
) -> None:
    b = world.b
    for email in ("rev1@panel.example", "pi@alpha.example"):
        send(api, "POST", f"/organisations/{b.org}/members", b.headers, {"email": email})
    # the reviewer may still review B's next Large Scale proposal
    body = {
        "project_id": b.project,
        "call_id": "it4lia-large-scale",
        "gpu_hours": 70_000,
        "months": 3,
        "declare_civilian_ai_act": True,
    }
    proposal = ok(send(api, "POST", "/proposals", b.headers, body), 201)
    r = send(
        api, "POST", f"/proposals/{proposal['id']}/reviews", world.actors["rev1"], {"score": 3}
    )
    assert r.status_code == 200, r.text
    # A's PI was not made a member of B's organisation
    assert ids_of(api, world.a.headers, "/organisations") == [world.a.org]


# --- operator-only actions ----------------------------------------------------------------------


@dataclass(frozen=True)
class StaffCase:
    name: str
    method: str
    url: Callable[[Tenant], str]
    body: Callable[[World], Json] | None = None
    control_status: int = 200


STAFF_ONLY = [
    StaffCase("close-call", "PATCH", lambda t: "/calls/it4lia-fast-lane",
              lambda w: {"state": "closed", "reason": "maintenance"}),
    StaffCase("manual-call", "PATCH", lambda t: "/calls/it4lia-playground",
              lambda w: {"decision": "manual"}),
    StaffCase("call-capacity", "PATCH", lambda t: "/calls/it4lia-playground",
              lambda w: {"offered_gpu_hours": 10}),
    StaffCase("add-call-reviewer", "POST", lambda t: "/calls/it4lia-large-scale/reviewers",
              lambda w: {"user_id": w.ids["rev3"]}),
    StaffCase("decide-accept", "POST", lambda t: f"/proposals/{t.review}/decision",
              lambda w: {"decision": "accept", "gpu_hours": 50_000}),
    StaffCase("decide-reject", "POST", lambda t: f"/proposals/{t.review}/decision",
              lambda w: {"decision": "reject", "reason": "no"}),
    StaffCase("assign-reviewer", "POST", lambda t: f"/proposals/{t.review}/reviewers",
              lambda w: {"reviewer_id": w.ids["rev3"]}),
    StaffCase("extend", "POST", lambda t: f"/allocations/{t.alloc}/changes",
              lambda w: {"action": "extend", "reason": "late GPUs", "months": 1}),
    StaffCase("top-up", "POST", lambda t: f"/allocations/{t.alloc}/changes",
              lambda w: {"action": "top_up", "reason": "more", "gpu_hours": 10}),
    StaffCase("suspend", "POST", lambda t: f"/allocations/{t.alloc}/changes",
              lambda w: {"action": "suspend", "reason": "abuse"}),
    StaffCase("resume", "POST", lambda t: f"/allocations/{t.alloc}/changes",
              lambda w: {"action": "resume", "reason": "fine again"}, control_status=409),
    StaffCase("terminate", "POST", lambda t: f"/allocations/{t.alloc}/changes",
              lambda w: {"action": "terminate", "reason": "ended"}),
    StaffCase("access-report", "GET", lambda t: "/reports/access"),
    StaffCase("federation-report", "GET", lambda t: "/reports/federation"),
]  # fmt: skip


@pytest.mark.parametrize("case", STAFF_ONLY, ids=[c.name for c in STAFF_ONLY])
def test_only_staff_run_calls_decisions_allocations_and_reports(
    api: TestClient, db: Database, world: World, case: StaffCase
) -> None:
    body = case.body(world) if case.body else None
    url = case.url(world.a)
    before = snapshot(db)
    # the PI on their own objects, a member of their project, a reviewer
    for name in ("A", "dave", "rev1"):
        r = send(api, case.method, url, world.actors[name], body)
        assert_error(r, 403, "forbidden")
        assert snapshot(db) == before, f"{name}'s {case.name} changed the database"
    r = send(api, case.method, url, world.actors["op"], body)
    assert r.status_code == case.control_status, r.text


# --- who sees who reviewed -----------------------------------------------------------------------


def test_applicants_never_see_reviewer_identities(api: TestClient, world: World) -> None:
    a, review = world.a, world.a.review
    # a third reviewer declares a conflict: staff see it, applicants do not
    r = send(api, "POST", f"/proposals/{review}/reviews", world.actors["rev3"],
             {"conflict": "I advise Alpha Robotics"})  # fmt: skip
    assert all("reviewer_id" not in x for x in ok(r)["reviews"])
    reviewer_ids = {world.ids["rev1"], world.ids["rev2"], world.ids["rev3"]}
    for name in ("A", "dave", "rev1"):
        h = world.actors[name]
        seen = ok(send(api, "GET", f"/proposals/{review}", h))
        assert [(x["score"], x["comment"]) for x in seen["reviews"]] == [
            (4, "rev1 thinks so"),
            (5, "rev2 thinks so"),
        ]
        for x in seen["reviews"]:
            assert set(x) == {"score", "comment", "submitted_at"}, (name, x)
        assert "reviewer_id" not in send(api, "GET", f"/proposals/{review}", h).text
        assert "I advise Alpha Robotics" not in send(api, "GET", f"/proposals/{review}", h).text
        if name != "rev1":  # the project's people also list it
            listed = next(p for p in ok(send(api, "GET", "/proposals", h)) if p["id"] == review)
            assert listed["reviews"] == seen["reviews"]
    for name in ("op", "admin"):
        seen = ok(send(api, "GET", f"/proposals/{review}", world.actors[name]))
        by_reviewer = {x["reviewer_id"]: x for x in seen["reviews"]}
        assert set(by_reviewer) == reviewer_ids
        assert (
            by_reviewer[world.ids["rev1"]]["score"],
            by_reviewer[world.ids["rev1"]]["state"],
        ) == (
            4,
            "submitted",
        )
        assert by_reviewer[world.ids["rev3"]]["state"] == "conflict"
        assert by_reviewer[world.ids["rev3"]]["conflict_reason"] == "I advise Alpha Robotics"
    # the conflicted reviewer no longer reaches the proposal
    assert_error(
        send(api, "GET", f"/proposals/{review}", world.actors["rev3"]), 404, "not_found",
        "proposal_id",
    )  # fmt: skip
    assert a.review == review
