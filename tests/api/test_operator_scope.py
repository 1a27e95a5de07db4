"""Operators scoped to their factories: a table of routes x roles, through HTTP.

Two factories, it4lia and jaif, each with its own tenant (an organisation and a project that
applied there only): an accepted Playground proposal and its allocation, a Large Scale
proposal in review with two reviews, a Fast Lane draft, a job that ran there (charged) and
one dispatched there, and the factory's agent. The roles: a federation admin, the operator
of the factory, the operator of the other factory, the tenant's PI, a member of its project
and a reviewer. Each case says what each role gets on one factory's objects; the table runs
on both factories. Every refusal changes no row of the database, and the operator of the
factory (or the rightful actor) then succeeds, so the refusals are about who asked. The
table is checked against the app's OpenAPI paths: a new route without a case fails
`test_every_route_has_an_operator_scope_case`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fabbrica.api.app import create_app
from fabbrica.api.deps import AppContext
from fabbrica.catalog.model import Catalog
from fabbrica.services import identity
from fabbrica.services.access.calls import seed_calls
from fabbrica.services.dispatch import Dispatcher
from fabbrica.store.db import Database
from tests.api.helpers import API, Headers, Response, assert_error, snapshot
from tests.conftest import ADMIN_TOKEN, Clock, bearer

Json = Any
FACTORIES = ("it4lia", "jaif")
GPU = {"it4lia": "a100", "jaif": "gh200"}
CAPACITY = {
    "jaif": {"partition": "booster", "gpu_model": "gh200", "total_gpus": 4, "free_gpus": 4},
    "it4lia": {"partition": "boost_usr_prod", "gpu_model": "a100", "total_gpus": 4, "free_gpus": 4},
}

# Routes with no factory in them: identity, the catalog, and what tenants do among
# themselves (tests/api/test_access_authz.py) or agents do (tests/api/test_agents_api.py).
NOT_FACTORY_SCOPED = {
    ("GET", "/health"),
    # a notebook is its member's alone, operators included: tests/api/test_notebooks_api.py
    ("POST", "/notebooks"),
    ("GET", "/notebooks"),
    ("GET", "/notebooks/{job_id}"),
    ("GET", "/factories"),
    ("GET", "/factories/{factory_id}"),
    ("GET", "/access-modes"),
    ("GET", "/sectors"),
    ("GET", "/me"),
    ("GET", "/users"),
    ("POST", "/users"),
    ("GET", "/users/{user_id}"),
    ("GET", "/users/{user_id}/identities"),  # tests/api/test_identities_api.py
    ("DELETE", "/users/{user_id}/identities/{identity_id}"),
    ("GET", "/auth/providers"),  # no token: tests/identity/test_cli_login.py
    ("POST", "/auth/device"),
    ("POST", "/tokens"),
    ("GET", "/tokens"),
    ("DELETE", "/tokens/{token_id}"),
    ("POST", "/organisations"),
    ("POST", "/organisations/{org_id}/members"),
    ("POST", "/organisations/{org_id}/join"),
    ("POST", "/projects"),
    ("POST", "/projects/{project_id}/invitations"),
    ("POST", "/invitations/accept"),
    ("DELETE", "/projects/{project_id}/members/{user_id}"),
    ("POST", "/projects/{project_id}/pi"),
    # data sets are a project's own (tests/api/test_datasets_api.py); agents' staging later
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
    ("GET", "/notices"),  # a member's own projects' alerts; operators get emailed digests
    # registered models are their project members' only (services/models.py; another
    # organisation's user gets 404: tests/api/test_models_api.py)
    ("GET", "/models"),
    ("GET", "/models/{name}/versions/{version}"),
    ("GET", "/models/{name}/versions/{version}/card"),
    ("GET", "/models/{name}/versions/{version}/files"),
    # templates are the same for everyone; a job made from one goes through the same
    # submission as POST /jobs (its case below)
    ("GET", "/templates"),
    ("GET", "/templates/{name}"),
    ("POST", "/templates/{name}/spec"),
    ("POST", "/templates/{name}/jobs"),
    ("POST", "/agent/sync"),
    ("GET", "/agent/accounts"),
    ("GET", "/agent/jobs/{job_id}/workdir"),
    ("POST", "/agent/jobs/{job_id}/log"),
    ("GET", "/agent/jobs/{job_id}/objects/{sha256}"),
    ("POST", "/agent/jobs/{job_id}/checkpoint"),
    ("GET", "/agent/jobs/{job_id}/checkpoint"),
}


def ok(r: Response, status: int = 200) -> Json:
    assert r.status_code == status, r.text
    return r.json()


@dataclass(frozen=True)
class Refs:
    """One factory's objects, all of its own tenant."""

    factory: str
    org: int
    project: str
    play: int  # accepted Playground proposal
    alloc: int  # its allocation
    review: int  # Large Scale, in review, two reviews in
    draft: int  # Fast Lane draft
    job: int  # ran there, succeeded, charged
    live_job: int  # dispatched there


@dataclass
class World:
    api: TestClient
    db: Database
    refs: dict[str, Refs]
    actors: dict[str, Headers]  # admin, op-it4lia, op-jaif, pi-F, member-F, rev1..rev3
    ids: dict[str, int]
    emails: dict[str, str] = field(default_factory=dict)

    def role(self, name: str, factory: str) -> Headers:
        other = next(f for f in FACTORIES if f != factory)
        key = {
            "admin": "admin",
            "op_own": f"op-{factory}",
            "op_other": f"op-{other}",
            "applicant": f"pi-{factory}",
            "member": f"member-{factory}",
            "reviewer": "rev1",
        }[name]
        return self.actors[key]


def make_user(
    api: TestClient, admin: Headers, email: str, role: str = "user", **extra: Any
) -> Json:
    body = {"email": email, "name": email.split("@")[0], "role": role, **extra}
    return ok(api.post(f"{API}/users", headers=admin, json=body), 201)


@pytest.fixture
def world(db: Database, catalog: Catalog, clock: Clock, tmp_path: Path) -> Iterator[World]:
    with db.session() as session:
        identity.bootstrap(session, now=clock(), token=ADMIN_TOKEN)
        seed_calls(session, catalog, clock())
    ctx = AppContext(db=db, catalog=catalog, clock=clock, files=tmp_path)
    with TestClient(create_app(ctx)) as api:
        admin = bearer(ADMIN_TOKEN)
        actors: dict[str, Headers] = {"admin": admin}
        ids: dict[str, int] = {}
        emails: dict[str, str] = {}
        for name, role, extra in [
            ("op-it4lia", "operator", {"factories": ["it4lia"]}),
            ("op-jaif", "operator", {"factories": ["jaif"]}),
            ("rev1", "reviewer", {}),
            ("rev2", "reviewer", {}),
            ("rev3", "reviewer", {}),
        ]:
            made = make_user(api, admin, f"{name}@fabbrica.example", role, **extra)
            actors[name], ids[name] = bearer(made["token"]), made["id"]
        agents = {}
        for factory in FACTORIES:
            r = api.post(f"{API}/agents/{factory}/token", headers=admin)
            agents[factory] = bearer(ok(r, 201)["token"])
            ok(api.post(f"{API}/calls/{factory}-large-scale/reviewers", headers=admin,
                        json={"user_id": ids["rev1"]}))  # fmt: skip
        dispatcher = Dispatcher(db, catalog, ctx.executors, clock)
        refs = {}
        for factory in FACTORIES:
            refs[factory] = _tenant(api, admin, factory, actors, ids, emails, agents, dispatcher)
        yield World(api, db, refs, actors, ids, emails)


def _tenant(
    api: TestClient,
    admin: Headers,
    factory: str,
    actors: dict[str, Headers],
    ids: dict[str, int],
    emails: dict[str, str],
    agents: dict[str, Headers],
    dispatcher: Dispatcher,
) -> Refs:
    pi = make_user(api, admin, f"pi@{factory}-tenant.example")
    member = make_user(api, admin, f"member@{factory}-tenant.example")
    h = actors[f"pi-{factory}"] = bearer(pi["token"])
    actors[f"member-{factory}"] = bearer(member["token"])
    ids[f"member-{factory}"], emails[f"member-{factory}"] = member["id"], member["email"]
    org = ok(api.post(f"{API}/organisations", headers=h, json={
        "name": f"{factory} tenant srl", "country": "IT", "type": "startup"}), 201)  # fmt: skip
    body = {"title": f"{factory} LLM", "org_id": org["id"]}
    project = ok(api.post(f"{API}/projects", headers=h, json=body), 201)["id"]
    invited = ok(api.post(f"{API}/projects/{project}/invitations", headers=h,
                          json={"email": member["email"]}), 201)  # fmt: skip
    ok(api.post(f"{API}/invitations/accept", headers=actors[f"member-{factory}"],
                json={"token": invited["token"]}))  # fmt: skip

    def apply(call: str, gpu_hours: float, months: int, submit: bool = True) -> Json:
        body = {"project_id": project, "call_id": f"{factory}-{call}", "gpu_hours": gpu_hours,
                "months": months, "declare_civilian_ai_act": True, "submit": submit}  # fmt: skip
        return ok(api.post(f"{API}/proposals", headers=h, json=body), 201)

    play = apply("playground", 100, 2)
    review = apply("large-scale", 60_000, 6)
    draft = apply("fast-lane", 2000, 1, submit=False)
    assert (play["state"], review["state"], draft["state"]) == ("accepted", "in_review", "draft")
    for reviewer, score in (("rev1", 4), ("rev2", 5)):
        ok(api.post(f"{API}/proposals/{review['id']}/reviews", headers=actors[reviewer],
                    json={"score": score}))  # fmt: skip

    def sync(runs: list[Json]) -> Json:
        body = {"backend": "slurm", "capabilities": [], "capacity": [CAPACITY[factory]],
                "runs": runs}  # fmt: skip
        return ok(api.post(f"{API}/agent/sync", headers=agents[factory], json=body))

    def dispatched() -> int:
        sync([])
        resources = {"time_limit": "10m", "gpus": 1, "gpu_model": GPU[factory]}
        spec = {"name": "t", "run": "echo hi", "resources": resources}
        job = ok(api.post(f"{API}/jobs", headers=h, json={"spec": spec, "project": project}), 201)
        dispatcher.step()
        assert ok(api.get(f"{API}/jobs/{job['id']}", headers=h))["factory"] == factory
        return int(job["id"])

    job = dispatched()
    done = {"run_tag": f"fab-{job}", "state": "succeeded", "site_job_id": "7",
            "started_at": "2026-11-21T12:00:00+00:00", "ended_at": "2026-11-21T12:06:00+00:00",
            "exit_code": 0, "gpus": 1, "elapsed_s": 360}  # fmt: skip
    r = api.post(f"{API}/agent/jobs/{job}/log", headers=agents[factory], content=b"hi\n")
    ok(r)
    sync([done])
    assert ok(api.get(f"{API}/jobs/{job}", headers=h))["state"] == "succeeded"
    live_job = dispatched()
    return Refs(factory, org["id"], project, play["id"], play["allocation"]["id"], review["id"],
                draft["id"], job, live_job)  # fmt: skip


# --- the table --------------------------------------------------------------------------------

ROLES = ("admin", "op_own", "op_other", "applicant", "member", "reviewer")
Check = Callable[[World, Refs, str, Json], None]


@dataclass(frozen=True)
class Case:
    """One request on one factory's objects, and what each role gets (`None`: not asked
    here, a tenant's own business tested elsewhere). Writes: the refused roles are asked
    first, then `control` once (it changes the state)."""

    name: str
    method: str
    route: str  # the OpenAPI path (under /api/v1)
    url: Callable[[Refs, World], str]
    expect: Mapping[str, int | None]
    body: Callable[[Refs, World], Json] | None = None
    field: str | None = None  # the field of a 404 (or None)
    control: str = "op_own"
    check: Check | None = None  # what a 200 shows each role


SEES_TENANT = frozenset({"admin", "op_own", "applicant", "member"})


def hides_other_factory(w: World, refs: Refs, role: str, data: Json) -> None:
    """The other factory's operator never reads the tenant's project or organisation."""
    if role == "op_other":
        text = json.dumps(data)
        assert refs.project not in text and f"{refs.factory} tenant srl" not in text, text


def ids_listed(attr: str, seen_by: frozenset[str] = SEES_TENANT) -> Check:
    """A listing holds the factory's object for `seen_by`, and for nobody else."""

    def check(w: World, refs: Refs, role: str, data: Json) -> None:
        listed = {item["id"] for item in data}
        assert (getattr(refs, attr) in listed) == (role in seen_by), (role, attr, listed)
        hides_other_factory(w, refs, role, data)

    return check


def reviewers_shown(w: World, refs: Refs, role: str, data: Json) -> None:
    pool = [w.ids["rev1"]] if role in ("admin", "op_own") else []
    assert data["reviewers"] == pool, role


def report_counts(w: World, refs: Refs, role: str, data: Json) -> None:
    # submitted proposals: Playground and Large Scale of each factory's tenant (drafts out)
    assert data["proposals"] == (4 if role == "admin" else 2), (role, data)
    assert data["by_mode"] == ({"large_scale": 2, "playground": 2} if role == "admin"
                               else {"large_scale": 1, "playground": 1})  # fmt: skip


def federation_by_factory(w: World, refs: Refs, role: str, data: Json) -> None:
    """The factory's playground grant and job are in the report of its operator and the
    admin, never in the other operator's."""
    keys = {row["key"] for row in data["by"]["factory"]}
    assert (refs.factory in keys) == (role in ("admin", "op_own")), (role, keys)
    assert (refs.factory in data["factories"]) == (role in ("admin", "op_own")), role
    if refs.factory in keys:
        row = next(r for r in data["by"]["factory"] if r["key"] == refs.factory)
        assert row["allocations"] == 1 and row["granted_gpu_hours"] == 100, row
        assert row["usage_records"] == 1, row


def usage_by_factory(w: World, refs: Refs, role: str, data: Json) -> None:
    keys = {row["key"] for row in data}
    assert (refs.factory in keys) == (role in SEES_TENANT), (role, keys)


def agents_listed(w: World, refs: Refs, role: str, data: Json) -> None:
    listed = {a["factory"] for a in data}
    assert (refs.factory in listed) == (role != "op_other"), (role, listed)
    if role == "admin":
        assert listed == set(FACTORIES)


REFUSED = {"applicant": 403, "member": 403, "reviewer": 403}
STAFF_WRITE = {"admin": None, "op_own": 200, "op_other": 404, **REFUSED}
STAFF_CALL = {"admin": None, "op_own": 200, "op_other": 403, **REFUSED}
TENANT_GET = {"admin": 200, "op_own": 200, "op_other": 404, "applicant": 200, "member": 200,
              "reviewer": 404}  # fmt: skip
LISTING = {role: 200 for role in ROLES}


def _change(action: str, **extra: Any) -> Callable[[Refs, World], Json]:
    return lambda r, w: {"action": action, "reason": "ops", **extra}


CASES = [
    # calls: public; only the factory's operators (and admins) change them or see the pool
    Case("list-calls", "GET", "/calls", lambda r, w: f"/calls?factory={r.factory}&state=all",
         LISTING),
    Case("get-call", "GET", "/calls/{call_id}", lambda r, w: f"/calls/{r.factory}-large-scale",
         LISTING, check=reviewers_shown),
    Case("close-call", "PATCH", "/calls/{call_id}", lambda r, w: f"/calls/{r.factory}-fast-lane",
         STAFF_CALL, body=lambda r, w: {"state": "closed", "reason": "maintenance"}),
    Case("add-call-reviewer", "POST", "/calls/{call_id}/reviewers",
         lambda r, w: f"/calls/{r.factory}-large-scale/reviewers", STAFF_CALL,
         body=lambda r, w: {"user_id": w.ids["rev3"]}),
    # proposals
    Case("list-proposals", "GET", "/proposals", lambda r, w: "/proposals",
         LISTING, check=ids_listed("play")),
    Case("proposals-of-project", "GET", "/proposals",
         lambda r, w: f"/proposals?project_id={r.project}", TENANT_GET, field="project_id"),
    Case("get-proposal", "GET", "/proposals/{proposal_id}", lambda r, w: f"/proposals/{r.play}",
         TENANT_GET, field="proposal_id"),
    Case("apply", "POST", "/proposals", lambda r, w: "/proposals",
         {"op_own": 403, "op_other": 404, "member": 403, "reviewer": 404, "applicant": 201},
         body=lambda r, w: {"project_id": r.project, "call_id": f"{r.factory}-benchmark",
                            "gpu_hours": 500, "months": 2, "declare_civilian_ai_act": True},
         field="project_id", control="applicant"),
    Case("submit-draft", "POST", "/proposals/{proposal_id}/submit",
         lambda r, w: f"/proposals/{r.draft}/submit?declare_civilian_ai_act=true",
         {"op_own": 403, "op_other": 404, "member": 403, "reviewer": 404, "applicant": 200},
         field="proposal_id", control="applicant"),
    Case("withdraw", "POST", "/proposals/{proposal_id}/withdraw",
         lambda r, w: f"/proposals/{r.review}/withdraw",
         {"op_own": 403, "op_other": 404, "member": 403, "reviewer": 403, "applicant": 200},
         field="proposal_id", control="applicant"),
    Case("review", "POST", "/proposals/{proposal_id}/reviews",
         lambda r, w: f"/proposals/{r.review}/reviews",
         {"op_own": 403, "op_other": 404, "member": 403, "applicant": 403, "reviewer": 200},
         body=lambda r, w: {"score": 3}, field="proposal_id", control="reviewer"),
    Case("assign-reviewer", "POST", "/proposals/{proposal_id}/reviewers",
         lambda r, w: f"/proposals/{r.review}/reviewers", STAFF_WRITE,
         body=lambda r, w: {"reviewer_id": w.ids["rev3"]}, field="proposal_id"),
    Case("decide-accept", "POST", "/proposals/{proposal_id}/decision",
         lambda r, w: f"/proposals/{r.review}/decision", STAFF_WRITE,
         body=lambda r, w: {"decision": "accept", "gpu_hours": 50_000}, field="proposal_id"),
    Case("decide-reject", "POST", "/proposals/{proposal_id}/decision",
         lambda r, w: f"/proposals/{r.review}/decision", STAFF_WRITE,
         body=lambda r, w: {"decision": "reject", "reason": "no"}, field="proposal_id"),
    # allocations
    Case("list-allocations", "GET", "/allocations", lambda r, w: "/allocations",
         LISTING, check=ids_listed("alloc")),
    Case("allocations-of-project", "GET", "/allocations",
         lambda r, w: f"/allocations?project_id={r.project}", TENANT_GET, field="project_id"),
    Case("get-allocation", "GET", "/allocations/{allocation_id}",
         lambda r, w: f"/allocations/{r.alloc}", TENANT_GET, field="allocation_id"),
    Case("allocation-audit", "GET", "/allocations/{allocation_id}/audit",
         lambda r, w: f"/allocations/{r.alloc}/audit", TENANT_GET, field="allocation_id"),
    *[
        Case(f"allocation-{action}", "POST", "/allocations/{allocation_id}/changes",
             lambda r, w: f"/allocations/{r.alloc}/changes",
             STAFF_WRITE | ({"op_own": 409} if action == "resume" else {}),
             body=_change(action, **extra), field="allocation_id")
        for action, extra in [("extend", {"months": 1}), ("top_up", {"gpu_hours": 10}),
                              ("suspend", {}), ("resume", {}), ("terminate", {})]
    ],
    Case("final-report", "POST", "/allocations/{allocation_id}/final-report",
         lambda r, w: f"/allocations/{r.alloc}/final-report",
         {"op_own": 403, "op_other": 404, "member": 403, "reviewer": 404, "applicant": 200},
         body=lambda r, w: {"text": "The model reached the target quality."},
         field="allocation_id", control="applicant"),
    # reports and usage
    Case("access-report", "GET", "/reports/access", lambda r, w: "/reports/access",
         {"admin": 200, "op_own": 200, "op_other": 200, **REFUSED}, check=report_counts),
    Case("federation-report", "GET", "/reports/federation",
         lambda r, w: "/reports/federation?from=2026-11-01&to=2026-12-01",
         {"admin": 200, "op_own": 200, "op_other": 200, **REFUSED}, check=federation_by_factory),
    Case("federation-report-of-factory", "GET", "/reports/federation",
         lambda r, w: f"/reports/federation?from=2026-11-01&to=2026-12-01&factory={r.factory}",
         {"admin": 200, "op_own": 200, "op_other": 403, **REFUSED}, check=federation_by_factory),
    Case("usage", "GET", "/usage", lambda r, w: "/usage?by=factory", LISTING,
         check=usage_by_factory),
    # jobs
    Case("list-jobs", "GET", "/jobs", lambda r, w: "/jobs", LISTING, check=ids_listed("job")),
    Case("get-job", "GET", "/jobs/{job_id}", lambda r, w: f"/jobs/{r.job}", TENANT_GET,
         field="job_id"),
    Case("job-logs", "GET", "/jobs/{job_id}/logs", lambda r, w: f"/jobs/{r.job}/logs",
         TENANT_GET, field="job_id"),
    Case("job-outputs", "GET", "/jobs/{job_id}/outputs", lambda r, w: f"/jobs/{r.job}/outputs",
         TENANT_GET, field="job_id"),
    Case("cancel-job", "POST", "/jobs/{job_id}/cancel", lambda r, w: f"/jobs/{r.live_job}/cancel",
         {"admin": None, "op_own": 200, "op_other": 404, "reviewer": 404, "applicant": None,
          "member": None}, field="job_id"),
    Case("cancel-array", "POST", "/jobs/{job_id}/cancel-array",
         lambda r, w: f"/jobs/{r.live_job}/cancel-array",
         {"admin": 409, "op_own": 409, "op_other": 404, "reviewer": 404, "applicant": None,
          "member": None}, field="job_id"),
    Case("submit-batch", "POST", "/job-batches", lambda r, w: "/job-batches",
         {"op_own": 403, "op_other": 404, "reviewer": 404, "applicant": 201, "member": None},
         body=lambda r, w: {"jobs": [{"project": r.project, "spec": {"name": "x", "run": "true",
             "resources": {"time_limit": "1m", "gpus": 1, "gpu_model": GPU[r.factory]}}}]},
         field="jobs.0.project", control="applicant"),
    Case("submit-job", "POST", "/jobs", lambda r, w: "/jobs",
         {"op_own": 403, "op_other": 404, "reviewer": 404, "applicant": 201, "member": None},
         body=lambda r, w: {"project": r.project, "spec": {"name": "x", "run": "true",
             "resources": {"time_limit": "1m", "gpus": 1, "gpu_model": GPU[r.factory]}}},
         field="project", control="applicant"),
    # agents
    Case("agent-token", "POST", "/agents/{factory_id}/token",
         lambda r, w: f"/agents/{r.factory}/token",
         STAFF_CALL | {"op_own": 201}),
    Case("list-agents", "GET", "/agents", lambda r, w: "/agents",
         {"admin": 200, "op_own": 200, "op_other": 200, **REFUSED}, check=agents_listed),
    Case("site-username", "PUT", "/agents/{factory_id}/usernames",
         lambda r, w: f"/agents/{r.factory}/usernames", STAFF_CALL,
         body=lambda r, w: {"email": w.emails[f"member-{r.factory}"], "username": "member1"}),
    # the tenant's organisation and project: an operator sees those that applied to them
    Case("list-orgs", "GET", "/organisations", lambda r, w: "/organisations",
         LISTING, check=ids_listed("org", frozenset({"admin", "op_own", "applicant"}))),
    Case("get-org", "GET", "/organisations/{org_id}", lambda r, w: f"/organisations/{r.org}",
         TENANT_GET | {"member": 404}, field="org_id"),
    Case("list-projects", "GET", "/projects", lambda r, w: f"/projects?org_id={r.org}",
         LISTING, check=ids_listed("project")),
    Case("get-project", "GET", "/projects/{project_id}", lambda r, w: f"/projects/{r.project}",
         TENANT_GET, field="project_id"),
    # who operates what: admins only
    Case("set-factories", "PUT", "/users/{user_id}/factories",
         lambda r, w: f"/users/{w.ids['rev3']}/factories",
         {"admin": 200, "op_own": 403, "op_other": 403, **REFUSED},
         body=lambda r, w: {"factories": []}, control="admin"),
    Case("suspend-user", "POST", "/users/{user_id}/suspend",
         lambda r, w: f"/users/{w.ids[f'member-{r.factory}']}/suspend",
         {"admin": 200, "op_own": 403, "op_other": 403, **REFUSED},
         body=lambda r, w: {"reason": "misuse"}, control="admin"),
    Case("reactivate-user", "POST", "/users/{user_id}/reactivate",
         lambda r, w: f"/users/{w.ids[f'member-{r.factory}']}/reactivate",
         {"admin": 409, "op_own": 403, "op_other": 403, **REFUSED},
         body=lambda r, w: {"reason": "cleared"}, control="admin"),
]  # fmt: skip


def send(w: World, method: str, url: str, headers: Headers, body: Json = None) -> Response:
    r: Response
    if body is None:
        r = w.api.request(method, f"{API}{url}", headers=headers)
    else:
        r = w.api.request(method, f"{API}{url}", headers=headers, json=body)
    return r


def test_every_route_has_an_operator_scope_case(api: TestClient) -> None:
    spec = api.get("/openapi.json").json()
    routes = {
        (method.upper(), path.removeprefix(API))
        for path, operations in spec["paths"].items()
        for method in operations
    }
    assert routes >= NOT_FACTORY_SCOPED
    covered = {(c.method, c.route) for c in CASES}
    assert covered <= routes, f"cases for routes that do not exist: {covered - routes}"
    missing = routes - NOT_FACTORY_SCOPED - covered
    assert not missing, f"routes without an operator-scope case: {sorted(missing)}"
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_an_operator_reaches_only_the_factories_it_operates(world: World, case: Case) -> None:
    w = world
    before = snapshot(w.db)
    # every refusal and every read, on both factories' objects: nothing changes
    for factory in FACTORIES:
        refs = w.refs[factory]
        url, body = case.url(refs, w), case.body(refs, w) if case.body else None
        for role in ROLES:
            status = case.expect.get(role)
            if status is None or (case.method != "GET" and status < 400):
                continue
            r = send(w, case.method, url, w.role(role, factory), body)
            assert snapshot(w.db) == before, f"{role}'s {case.name} on {factory} changed rows"
            if status == 404:
                assert_error(r, 404, "not_found", case.field)
                assert f"{factory} tenant srl" not in r.text  # (it may echo the id sent)
            elif status == 403:
                assert_error(r, 403, "forbidden")
            else:
                assert r.status_code == status, (role, factory, r.text)
                if case.check is not None:
                    case.check(w, refs, role, r.json())
    if case.method == "GET":
        return
    # the rightful actor does it, on each factory: the operator of it4lia still runs it4lia
    for factory in FACTORIES:
        refs = w.refs[factory]
        url, body = case.url(refs, w), case.body(refs, w) if case.body else None
        status = case.expect[case.control]
        r = send(w, case.method, url, w.role(case.control, factory), body)
        assert r.status_code == status, (case.control, factory, r.text)
        if status < 400:
            assert snapshot(w.db) != before, f"the control of {case.name} changed nothing"
            before = snapshot(w.db)


def test_an_operator_of_it4lia_cannot_open_decide_or_close_anything_of_jaif(world: World) -> None:
    """The finding, as one story: nothing of jaif opens, nothing changes; it4lia's do."""
    w, jaif, it4lia = world, world.refs["jaif"], world.refs["it4lia"]
    op = w.actors["op-it4lia"]
    before = snapshot(w.db)
    attempts = [
        ("GET", f"/proposals/{jaif.review}", None, 404),
        ("POST", f"/proposals/{jaif.review}/decision", {"decision": "accept"}, 404),
        ("PATCH", "/calls/jaif-playground", {"state": "closed", "reason": "x"}, 403),
        ("POST", f"/allocations/{jaif.alloc}/changes", {"action": "terminate", "reason": "x"},
         404),
        ("POST", "/agents/jaif/token", None, 403),
    ]  # fmt: skip
    for method, url, body, status in attempts:
        r = send(w, method, url, op, body)
        assert r.status_code == status, (url, r.text)
        assert snapshot(w.db) == before, url
    for method, url, body in [
        ("POST", f"/proposals/{it4lia.review}/decision", {"decision": "accept"}),
        ("PATCH", "/calls/it4lia-playground", {"state": "closed", "reason": "x"}),
        ("POST", f"/allocations/{it4lia.alloc}/changes", {"action": "terminate", "reason": "x"}),
    ]:
        assert send(w, method, url, op, body).status_code == 200, url


def test_an_operator_who_is_a_member_elsewhere_still_decides_only_for_its_factories(
    world: World,
) -> None:
    """Membership of a project lets an operator see its proposal and allocation at another
    factory, not decide, change or staff them."""
    w, jaif = world, world.refs["jaif"]
    op = w.actors["op-it4lia"]
    invited = ok(w.api.post(f"{API}/projects/{jaif.project}/invitations",
                            headers=w.actors["pi-jaif"],
                            json={"email": "op-it4lia@fabbrica.example"}), 201)  # fmt: skip
    ok(w.api.post(f"{API}/invitations/accept", headers=op, json={"token": invited["token"]}))
    assert ok(w.api.get(f"{API}/proposals/{jaif.review}", headers=op))["id"] == jaif.review
    before = snapshot(w.db)
    for url, body in [
        (f"/proposals/{jaif.review}/decision", {"decision": "accept"}),
        (f"/allocations/{jaif.alloc}/changes", {"action": "suspend", "reason": "x"}),
        (f"/proposals/{jaif.review}/reviewers", {"reviewer_id": w.ids["rev3"]}),
    ]:
        r = send(w, "POST", url, op, body)
        assert_error(r, 403, "forbidden")
        assert "jaif" in r.json()["error"]["message"], r.text
        assert snapshot(w.db) == before, url
    decided = send(w, "POST", f"/proposals/{jaif.review}/decision", w.actors["op-jaif"],
                   {"decision": "accept"})  # fmt: skip
    assert decided.status_code == 200, decided.text
