"""The portal's notices page (both databases): a member sees the budget alerts of their
project's allocations, the same ones `GET /api/v1/notices` answers; another tenant sees
none of them; nobody signed out sees the page."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from fabbrica.api.app import create_app
from fabbrica.api.deps import AppContext
from fabbrica.portal import install_portal
from fabbrica.services import alerts, identity
from fabbrica.services.access import projects
from fabbrica.store.models import Allocation
from tests.conftest import Clock, bearer
from tests.db.test_access_services import (
    allocation_for,
    apply,
    load_user,
    new_applicant,
    new_user,
)
from tests.portal.test_pages import sign_in

MEMBER = "eng@startup.it"
OTHER_PI = "pi@elsewhere.fi"


@pytest.fixture
def portal(ctx: AppContext) -> Iterator[TestClient]:
    app = create_app(ctx)
    install_portal(app)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def spend(ctx: AppContext, allocation_id: int, used: float) -> None:
    with ctx.db.session() as s:
        allocation = s.get(Allocation, allocation_id)
        assert allocation is not None
        allocation.used_gpu_hours = used


def test_a_member_sees_their_allocations_notices_and_no_other_tenants(
    ctx: AppContext, clock: Clock, portal: TestClient
) -> None:
    ours = new_applicant(ctx, "pi@startup.it")
    member_id = new_user(ctx, MEMBER, name="Eng")
    with ctx.db.session() as s:
        _, secret = projects.invite(
            s, load_user(s, ours.pi_id), project_id=ours.project_id, email=MEMBER, now=clock()
        )
        projects.accept(s, load_user(s, member_id), token=secret, now=clock())
    theirs = new_applicant(ctx, OTHER_PI)
    our_allocation = allocation_for(ctx, apply(ctx, ours)).id
    their_allocation = allocation_for(ctx, apply(ctx, theirs)).id
    spend(ctx, our_allocation, 800.0)  # of 1,000: past 75 %
    spend(ctx, their_allocation, 950.0)  # past 75 and 90 %
    with ctx.db.session() as s:
        assert alerts.check_budgets(s, clock()) > 0
    with ctx.db.session() as s:
        ours_told = [a.message for a in alerts.notices(s, load_user(s, member_id))]
        theirs_told = [a.message for a in alerts.notices(s, load_user(s, theirs.pi_id))]
    assert len(ours_told) == 1 and len(theirs_told) == 2

    assert portal.get("/notices", follow_redirects=False).status_code in (303, 307)

    sign_in(portal, MEMBER)
    page = portal.get("/notices")
    assert page.status_code == 200, page.text
    assert 'href="/notices"' in page.text  # in the navigation
    for message in ours_told:
        assert message in page.text
    assert ours.project_id in page.text
    for message in theirs_told:
        assert message not in page.text
    assert theirs.project_id not in page.text
    with ctx.db.session() as s:  # the API answers the member the same notices
        _, token = identity.issue_token(s, load_user(s, member_id), name="t", now=clock())
    api = portal.get("/api/v1/notices", headers=bearer(token))
    assert [n["message"] for n in api.json()] == ours_told

    portal.cookies.clear()
    sign_in(portal, OTHER_PI)
    page = portal.get("/notices")
    assert page.status_code == 200, page.text
    for message in theirs_told:
        assert message in page.text
    for message in ours_told:
        assert message not in page.text
    assert ours.project_id not in page.text


def test_no_notice_says_so(ctx: AppContext, portal: TestClient) -> None:
    new_applicant(ctx, OTHER_PI)
    sign_in(portal, OTHER_PI)
    page = portal.get("/notices")
    assert page.status_code == 200 and "No notice" in page.text
