"""The applicant's and member's pages in process (the real app, both databases): an
organisation, a project and a Playground application made through the forms, live
eligibility that names every broken rule and stores nothing, invitations, the proposal's
page (clock, reviews without reviewers), balance bars, another tenant's pages as 404,
stored text escaped, forms without their CSRF token refused."""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from fabbrica.api.app import create_app
from fabbrica.api.deps import AppContext
from fabbrica.core.access import next_cutoff
from fabbrica.core.workdays import working_days
from fabbrica.portal import install_portal
from fabbrica.store.db import Database
from fabbrica.store.models import Allocation, OutboxEmail
from tests.api.helpers import Rows, snapshot
from tests.conftest import Clock, bearer
from tests.portal.test_pages import PAYLOAD, csrf_of, ok, sign_in

API = "/api/v1"
PLAYGROUND = "it4lia-playground"


@pytest.fixture
def portal(ctx: AppContext) -> Iterator[TestClient]:
    app = create_app(ctx)
    install_portal(app)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def stored(db: Database) -> Rows:
    """Every row but the portal sessions' (each page view records its last use)."""
    rows = snapshot(db)
    rows.pop("portal_sessions")
    return rows


def new_founder(portal: TestClient, email: str, *, country: str = "IT", type: str = "startup",
                name: str = "Startup") -> str:  # fmt: skip
    """Sign in with a new address, then create an organisation and a project through the
    forms, as a founder does; returns the project id."""
    sign_in(portal, email)
    token = csrf_of(portal.get("/projects").text)
    made = portal.post("/organisations", data={"csrf": token, "name": name, "country": country,
                       "type": type, "sector": "space"}, follow_redirects=False)  # fmt: skip
    assert made.status_code == 303, made.text
    org_id = made.headers["location"].rsplit("/", 1)[1]
    body = {"csrf": token, "title": f"Vision {PAYLOAD}", "org_id": org_id, "mode": "playground"}
    project = portal.post("/projects", data=body, follow_redirects=False)
    assert project.status_code == 303, project.text
    return str(project.headers["location"].rsplit("/", 1)[1])


def application(project: str, token: str, **changes: Any) -> dict[str, Any]:
    abstract = f"Detecting ships {PAYLOAD}"
    body = {"csrf": token, "project": project, "gpu_hours": "100", "months": "1",
            "gpu_model": "", "abstract": abstract, "declare": "true"}  # fmt: skip
    return body | changes


def test_a_founder_goes_from_an_organisation_to_a_playground_allocation(
    portal: TestClient, ctx: AppContext
) -> None:
    project = new_founder(portal, "founder@startup.it", name=f"Orbit {PAYLOAD}")
    calls = portal.get("/apply", params={"project": project})
    assert calls.status_code == 200 and f"/calls/{PLAYGROUND}/apply?project={project}" in calls.text
    form = portal.get(f"/calls/{PLAYGROUND}/apply", params={"project": project})
    assert form.status_code == 200 and "EU AI Act" in form.text and 'name="declare"' in form.text
    token = csrf_of(form.text)
    check = portal.post(f"/calls/{PLAYGROUND}/apply/check", data=application(project, token),
                        headers={"HX-Request": "true"})  # fmt: skip
    assert check.status_code == 200 and "Eligible" in check.text and "<html" not in check.text
    sent = portal.post(f"/calls/{PLAYGROUND}/apply", data=application(project, token),
                       follow_redirects=False)  # fmt: skip
    assert sent.status_code == 303 and re.fullmatch(r"/proposals/\d+", sent.headers["location"])
    page = portal.get(sent.headers["location"]).text
    assert "Accepted, decided automatically" in page
    assert "Decided in 0 working days of the Playground target of 2 (within the target)" in page
    found = re.search(r'href="/allocations/(\d+)"', page)
    assert found is not None
    allocation = portal.get(f"/allocations/{found[1]}").text
    assert "0 used (solid) · 0 reserved (hatched) · 100 granted GPU-hours" in allocation
    assert "0% taken" in allocation and "Warning" not in allocation
    org = _org_of(portal, project)
    for path in ("/projects", f"/projects/{project}", "/allocations", sent.headers["location"],
                 f"/organisations/{org}", f"/allocations/{found[1]}"):  # fmt: skip
        shown = portal.get(path)
        assert shown.status_code == 200, path
        assert "<script>alert" not in shown.text and "<img src=x" not in shown.text, path
        assert "&lt;script&gt;alert" in shown.text, path
    # a second live Playground allocation for the project is refused, naming the first
    again = portal.post(f"/calls/{PLAYGROUND}/apply", data=application(project, token))
    assert again.status_code == 422 and "one live allocation per project and call" in again.text


def _org_of(portal: TestClient, project: str) -> str:
    found = re.search(r'href="/organisations/(\d+)"', portal.get(f"/projects/{project}").text)
    assert found is not None
    return found[1]


def test_the_application_form_names_each_broken_rule_and_stores_nothing(
    portal: TestClient, db: Database
) -> None:
    project = new_founder(portal, "ceo@corp.us", country="US", type="large_industry")
    token = csrf_of(portal.get(f"/calls/{PLAYGROUND}/apply").text)
    before = stored(db)
    body = application(project, token, gpu_hours="900000", months="7", gpu_model="tpu-v5",
                       declare="")  # fmt: skip
    del body["declare"]
    live = portal.post(f"/calls/{PLAYGROUND}/apply/check", data=body,
                       headers={"HX-Request": "true"})  # fmt: skip
    assert live.status_code == 200
    fields = re.findall(r'data-field="([a-z_]+)"', live.text)
    assert fields == ["country", "gpu_hours", "months", "gpu_model", "declare_civilian_ai_act"]
    assert "organisation country US is not eligible" in live.text
    assert "Playground grants at most 5,000 GPU-hours; 900,000 requested" in live.text
    # without JavaScript: the submission shows the same rules, and nothing is stored
    sent = portal.post(f"/calls/{PLAYGROUND}/apply", data=body)
    assert sent.status_code == 422
    assert re.findall(r'data-field="([a-z_]+)"', sent.text) == fields
    assert 'value="900000"' in sent.text and 'aria-invalid="true"' in sent.text
    not_a_number = portal.post(f"/calls/{PLAYGROUND}/apply/check",
                               data=application(project, token, gpu_hours="lots"))  # fmt: skip
    assert "give the GPU-hours you need as a number" in not_a_number.text
    # in Italian: each rule in Italian, its numbers the Italian way
    italian = portal.post(f"/calls/{PLAYGROUND}/apply/check", data=body,
                          headers={"HX-Request": "true", "Accept-Language": "it"})  # fmt: skip
    assert re.findall(r'data-field="([a-z_]+)"', italian.text) == fields
    assert "il paese dell'organizzazione, US, non è ammissibile" in html.unescape(italian.text)
    assert "Playground assegna al massimo 5.000 ore GPU; richieste 900.000" in italian.text
    assert "is not eligible" not in italian.text and "requested" not in italian.text
    assert stored(db) == before


def test_another_organisations_pages_are_not_found(
    portal: TestClient, api: TestClient, admin: dict[str, str], db: Database
) -> None:
    other = ok(api.post(f"{API}/users", headers=admin,
                        json={"email": "pi@beta.it", "name": "Beta"}), 201)  # fmt: skip
    h = bearer(other["token"])
    body = {"name": "Beta secret", "country": "IT", "type": "sme"}
    org = ok(api.post(f"{API}/organisations", headers=h, json=body), 201)
    beta = ok(api.post(f"{API}/projects", headers=h,
                       json={"title": "Beta secret", "org_id": org["id"]}), 201)["id"]  # fmt: skip
    proposal = ok(api.post(f"{API}/proposals", headers=h, json={
        "project_id": beta, "call_id": PLAYGROUND, "gpu_hours": 10, "months": 1,
        "declare_civilian_ai_act": True}), 201)  # fmt: skip
    allocation = proposal["allocation"]["id"]
    new_founder(portal, "pi@alpha.it")
    token = csrf_of(portal.get("/projects").text)
    before = stored(db)
    for path in (f"/organisations/{org['id']}", f"/projects/{beta}",
                 f"/proposals/{proposal['id']}", f"/allocations/{allocation}"):  # fmt: skip
        page = portal.get(path)
        assert page.status_code == 404, path
        assert "Beta secret" not in page.text and beta not in page.text, path
    posts = {
        f"/organisations/{org['id']}/members": {"email": "pi@alpha.it"},
        f"/projects/{beta}/invitations": {"email": "pi@alpha.it"},
        f"/allocations/{allocation}/report": {"text": "a report long enough to be one"},
        f"/calls/{PLAYGROUND}/apply/check": application(beta, token),
        f"/calls/{PLAYGROUND}/apply": application(beta, token),
    }
    for path, data in posts.items():
        refused = portal.post(path, data={"csrf": token, **data})
        assert refused.status_code == 404, (path, refused.text)
        assert "Beta secret" not in refused.text
    assert "Beta secret" not in portal.get("/projects").text + portal.get("/allocations").text
    assert stored(db) == before


def test_forms_without_their_csrf_token_are_refused_and_change_nothing(
    portal: TestClient, db: Database
) -> None:
    project = new_founder(portal, "solo@startup.it")
    token = csrf_of(portal.get("/projects").text)
    before = stored(db)
    posts = {
        "/organisations": {"name": "Sneaky", "country": "IT", "type": "startup"},
        "/projects": {"title": "Sneaky", "org_id": _org_of(portal, project)},
        f"/projects/{project}/invitations": {"email": "friend@startup.it"},
        f"/calls/{PLAYGROUND}/apply": application(project, "wrong"),
        "/invitations/accept": {"token": "x"},
    }
    for path, data in posts.items():
        data.pop("csrf", None)
        for sent in (data, {**data, "csrf": token[::-1]}):
            refused = portal.post(path, data=sent)
            assert refused.status_code == 403, path
            assert "out of date" in refused.text
    assert stored(db) == before


def test_invitations_by_email_to_a_project_and_to_an_organisation(
    portal: TestClient, ctx: AppContext
) -> None:
    project = new_founder(portal, "lead@startup.it")
    org_id = _org_of(portal, project)
    token = csrf_of(portal.get("/projects").text)
    invited = portal.post(f"/projects/{project}/invitations",
                          data={"csrf": token, "email": "Dev@Startup.it"})  # fmt: skip
    assert invited.status_code == 200 and "An invitation is on its way to dev@startup.it" in (
        invited.text
    )
    with ctx.db.session() as session:
        body = session.scalars(select(OutboxEmail.body).order_by(OutboxEmail.id.desc())).first()
    secret = re.search(r"project accept (\S+)", body or "")
    assert secret is not None
    bad = portal.post(f"/projects/{project}/invitations", data={"csrf": token, "email": "nope"})
    assert bad.status_code == 422 and "email" in bad.text
    # the lead adds an existing user to the organisation (who joins later) ...
    sign_in(portal, "dev@startup.it")  # the invitee's first sign-in makes their account
    sign_in(portal, "lead@startup.it")
    token = csrf_of(portal.get("/projects").text)
    added = portal.post(f"/organisations/{org_id}/members",
                        data={"csrf": token, "email": "dev@startup.it"})  # fmt: skip
    assert "dev@startup.it is added" in added.text and "invited as member" in added.text
    # ... and the invitee accepts both, in the browser
    sign_in(portal, "dev@startup.it")
    page = portal.get("/projects").text
    assert "invites you as member" in page and project not in page
    token = csrf_of(page)
    form = portal.get("/invitations/accept", params={"token": secret[1]})
    assert secret[1] in form.text
    accepted = portal.post("/invitations/accept", data={"csrf": token, "token": secret[1]})
    assert accepted.status_code == 200 and "Developer" not in accepted.text
    assert "dev@startup.it): member" in accepted.text
    twice = portal.post("/invitations/accept", data={"csrf": token, "token": secret[1]})
    assert twice.status_code == 422 and "already accepted" in twice.text
    joined = portal.post(f"/organisations/{org_id}/join", data={"csrf": token})
    assert joined.status_code == 200 and "dev@startup.it): member" in joined.text


@pytest.mark.parametrize(
    ("used", "reserved", "shown"),
    [
        (50.0, 20.0, ["70% taken"]),
        (60.0, 15.0, ["75% taken", "Warning:</strong> 75% of the GPU-hours"]),
        (90.0, 10.0, ["100% taken", "Used up:"]),
    ],
)
def test_the_balance_bar_says_its_values_and_warns_at_75_and_100_percent(
    portal: TestClient, ctx: AppContext, used: float, reserved: float, shown: list[str]
) -> None:
    project = new_founder(portal, "bar@startup.it")
    token = csrf_of(portal.get("/projects").text)
    portal.post(f"/calls/{PLAYGROUND}/apply", data=application(project, token))
    with ctx.db.session() as session:  # as jobs would have charged and reserved it
        allocation = session.scalars(select(Allocation)).one()
        allocation.used_gpu_hours, allocation.reserved_gpu_hours = used, reserved
        allocation_id = allocation.id
    for path in ("/allocations", f"/allocations/{allocation_id}", f"/projects/{project}"):
        page = portal.get(path).text
        assert f"{used:,.1f} used (solid) · {reserved:,.1f} reserved (hatched)" in page, path
        for text in shown:
            assert text in page, path
        if len(shown) == 1:
            assert "Warning" not in page and "Used up" not in page


def test_the_proposal_page_shows_scores_and_comments_never_reviewers(
    portal: TestClient, api: TestClient, admin: dict[str, str], ctx: AppContext
) -> None:
    project = new_founder(portal, "big@startup.it")
    token = csrf_of(portal.get("/projects").text)
    body = application(project, token, gpu_hours="60000", months="6")
    sent = portal.post("/calls/it4lia-large-scale/apply", data=body, follow_redirects=False)
    assert sent.status_code == 303, sent.text
    reviewer = ok(api.post(f"{API}/users", headers=admin, json={"email": "rosa@panel.eu",
                  "name": "Rosa Revisora", "role": "reviewer"}), 201)  # fmt: skip
    pid = sent.headers["location"].rsplit("/", 1)[1]
    ok(api.post(f"{API}/proposals/{pid}/reviews", headers=bearer(reviewer["token"]),
                json={"score": 4, "comment": f"Strong plan {PAYLOAD}"}))  # fmt: skip
    page = portal.get(sent.headers["location"]).text
    assert "In review" in page and "Score 4 of 5" in page and "Strong plan &lt;script&gt;" in page
    assert "Rosa" not in page and "rosa@panel.eu" not in page
    mode = ctx.catalog.access_mode("large_scale")
    assert mode is not None
    cutoff = next_cutoff(mode, ctx.clock().date())
    assert cutoff is not None
    starts = f"The decision clock starts at the cut-off on {cutoff:%b} {cutoff.day}, {cutoff.year}"
    assert starts in page
    # a week after the cut-off: its working days (Italy's holidays off) against the target
    clock: Clock = ctx.clock  # type: ignore[assignment]
    clock.now = dt.datetime.combine(cutoff + dt.timedelta(days=6), dt.time(12), dt.UTC)
    sign_in(portal, "big@startup.it")  # the session has expired meanwhile
    days = working_days(cutoff - dt.timedelta(days=1), clock().date(), "IT")
    page = portal.get(sent.headers["location"]).text
    expected = f"Waiting for {days} working days of the Large Scale target of 10: {10 - days} left"
    assert days > 1 and expected in page


def test_a_refused_job_submission_shows_the_form_again_and_stores_nothing(
    portal: TestClient, db: Database
) -> None:
    new_founder(portal, "jobs@startup.it")
    token = csrf_of(portal.get("/jobs").text)
    before = stored(db)
    refused = portal.post("/jobs", data={"csrf": token, "spec": "name: x\nrun: [unclosed"})
    assert refused.status_code == 422 and "spec" in refused.text
    assert "name: x" in refused.text  # the spec is kept in the form
    no_allocation = portal.post("/jobs", data={"csrf": token, "example": "digits"})
    assert no_allocation.status_code == 422 and 'role="alert"' in no_allocation.text
    assert stored(db) == before
