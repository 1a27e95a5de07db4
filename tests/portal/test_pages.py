"""The portal's pages in process (the real app, both databases): what anyone sees, what
needs a session, CSRF on every form, another tenant's pages as 404, stored text escaped."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from fabbrica.api.app import create_app
from fabbrica.api.deps import AppContext
from fabbrica.core.jobspec import spec_from_data
from fabbrica.portal import install_portal
from fabbrica.services import portal_sessions
from fabbrica.store.models import Job, OutboxEmail, Project
from tests.conftest import bearer

API = "/api/v1"
PAYLOAD = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@pytest.fixture
def portal(ctx: AppContext) -> Iterator[TestClient]:
    app = create_app(ctx)
    install_portal(app)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def tenant(api: TestClient, admin: dict[str, str], key: str) -> tuple[str, int]:
    """A user with an organisation and a project whose names hold an HTML payload, and a
    job of that project (as the control loop would have run it); (email, job id)."""
    email = f"pi@{key}.example"
    user = ok(api.post(f"{API}/users", headers=admin, json={"email": email, "name": key}), 201)
    h = bearer(user["token"])
    org = ok(api.post(f"{API}/organisations", headers=h, json={"name": f"{key} {PAYLOAD}",
              "country": "IT", "type": "startup", "sector": "space"}), 201)  # fmt: skip
    body = {"title": f"{key} {PAYLOAD}", "org_id": org["id"]}
    project = ok(api.post(f"{API}/projects", headers=h, json=body), 201)["id"]
    ctx: AppContext = api.app.state.ctx  # type: ignore[attr-defined]
    spec = spec_from_data({"name": f"{key}-job", "run": "true", "resources": {"gpus": 1}})
    with ctx.db.session() as session:
        pk = session.scalars(select(Project.pk).where(Project.id == project)).one()
        job = Job(project_pk=pk, user_id=user["id"], name=spec.name, spec=spec.model_dump_json(),
                  state="queued", gpus=1, nodes=1, time_limit_s=600, reason=f"waiting {PAYLOAD}",
                  submitted_at=ctx.clock())  # fmt: skip
        session.add(job)
        session.flush()
        return email, job.id


def sign_in(client: TestClient, email: str) -> None:
    ctx: AppContext = client.app.state.ctx  # type: ignore[attr-defined]
    with ctx.db.session() as session:
        portal_sessions.send_link(session, email, base_url="http://testserver", now=ctx.clock())
    with ctx.db.session() as session:
        body = session.scalars(select(OutboxEmail.body).order_by(OutboxEmail.id.desc())).first()
    assert body is not None
    secret = re.search(r"/sign-in/(\S+)", body)
    assert secret is not None
    response = client.get(f"/sign-in/{secret[1]}", follow_redirects=False)
    assert response.status_code == 303 and "fabbrica_session" in client.cookies


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None, page[:500]
    return found[1]


def test_anyone_sees_the_catalog_filtered_and_the_open_calls(portal: TestClient) -> None:
    page = portal.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "LUMI AI Factory" in page.text and "IT4LIA" in page.text and "Playground" in page.text
    italy = portal.get("/", params={"country": "IT"})
    assert "IT4LIA" in italy.text and "LUMI AI Factory" not in italy.text
    rows = portal.get("/", params={"gpu_model": "mi250x"}, headers={"HX-Request": "true"})
    assert "LUMI AI Factory" in rows.text and "<html" not in rows.text and "IT4LIA" not in rows.text
    factory = portal.get("/factories/it4lia")
    assert factory.status_code == 200 and "a100" in factory.text.lower()
    missing = portal.get("/factories/nowhere")
    assert missing.status_code == 404 and "text/html" in missing.headers["content-type"]


def test_pages_of_a_member_need_a_session(portal: TestClient) -> None:
    response = portal.get("/jobs", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/sign-in?next=/jobs"


def test_the_sign_in_form_needs_its_csrf_token(portal: TestClient, ctx: AppContext) -> None:
    form = portal.get("/sign-in")
    refused = portal.post("/sign-in", data={"email": "new@startup.it"})
    assert refused.status_code == 403
    with ctx.db.session() as session:
        assert session.scalar(select(func.count()).select_from(OutboxEmail)) == 0
    sent = portal.post("/sign-in", data={"email": "new@startup.it", "csrf": csrf_of(form.text)})
    assert sent.status_code == 200 and "Check your email" in sent.text
    bad = portal.post("/sign-in", data={"email": "nope", "csrf": csrf_of(form.text)})
    assert bad.status_code == 422 and "not an email address" in bad.text
    with ctx.db.session() as session:
        assert session.scalar(select(func.count()).select_from(OutboxEmail)) == 1


def test_another_tenants_job_is_404_and_forms_without_csrf_change_nothing(
    portal: TestClient, api: TestClient, admin: dict[str, str], ctx: AppContext
) -> None:
    alpha, alpha_job = tenant(api, admin, "alpha")
    _, beta_job = tenant(api, admin, "beta")
    sign_in(portal, alpha)
    own = portal.get(f"/jobs/{alpha_job}")
    assert own.status_code == 200 and "alpha-job" in own.text
    for path in (f"/jobs/{beta_job}", f"/jobs/{beta_job}/log", f"/jobs/{beta_job}/outputs"):
        response = portal.get(path)
        assert response.status_code == 404, path
        assert "beta" not in response.text
    assert "beta-job" not in portal.get("/jobs").text
    token = csrf_of(own.text)
    assert portal.post(f"/jobs/{beta_job}/cancel", data={"csrf": token}).status_code == 404
    assert portal.post(f"/jobs/{alpha_job}/cancel").status_code == 403  # no token
    with ctx.db.session() as session:
        states = {i: s for i, s in session.execute(select(Job.id, Job.state))}
    assert states == {alpha_job: "queued", beta_job: "queued"}
    done = portal.post(f"/jobs/{alpha_job}/cancel", data={"csrf": token}, follow_redirects=False)
    assert done.status_code == 303
    with ctx.db.session() as session:
        assert session.get(Job, alpha_job).state == "cancelled"  # type: ignore[union-attr]


def test_stored_text_is_shown_escaped(
    portal: TestClient, api: TestClient, admin: dict[str, str]
) -> None:
    email, job_id = tenant(api, admin, "gamma")
    sign_in(portal, email)
    for path in ("/jobs", f"/jobs/{job_id}"):
        page = portal.get(path).text
        assert "<script>alert" not in page and "<img src=x" not in page, path
        assert "&lt;script&gt;alert" in page, path


def test_sign_in_never_redirects_off_site_and_sign_out_ends_the_session(
    portal: TestClient, api: TestClient, admin: dict[str, str], ctx: AppContext
) -> None:
    email, _ = tenant(api, admin, "delta")
    sign_in(portal, email)
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        response = portal.get("/sign-in", params={"next": target}, follow_redirects=False)
        assert response.headers["location"] == "/", target
    account = portal.get("/account")
    assert "delta" in account.text and "(this one)" in account.text
    portal.post("/sign-out", data={"csrf": csrf_of(account.text)})
    assert portal.get("/jobs", follow_redirects=False).status_code == 303
    with ctx.db.session() as session:
        now = ctx.clock() + dt.timedelta(seconds=1)
        from fabbrica.store.models import PortalSession

        ended = session.scalars(select(PortalSession.ended_at)).all()
        assert ended and all(e is not None and e <= now for e in ended)


def test_a_refused_submission_shows_why_and_stores_nothing(
    portal: TestClient, api: TestClient, admin: dict[str, str], ctx: AppContext
) -> None:
    email, _ = tenant(api, admin, "gamma")
    sign_in(portal, email)
    token = csrf_of(portal.get("/jobs").text)
    with ctx.db.session() as session:
        before = session.scalar(select(func.count()).select_from(Job))
    bad_spec = "name: Bad Name\nrun: true\n"
    refused = portal.post("/jobs", data={"csrf": token, "spec": bad_spec})
    assert refused.status_code == 422, refused.text[:2000]
    assert "name" in refused.text
    # a spec that parses but that no allocation pays for: refused by the service
    unpaid = "name: unpaid\nrun: 'true'\nresources: {gpus: 1, time_limit: 5m}\n"
    refused = portal.post("/jobs", data={"csrf": token, "spec": unpaid})
    assert refused.status_code == 422, refused.text[:2000]
    with ctx.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == before
    assert portal.get("/jobs").status_code == 200  # the session lives on
