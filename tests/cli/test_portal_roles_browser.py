"""The review and decision of a Large Scale proposal in a real Chromium against a real
`fabbrica up` (both databases): a reviewer scores it from the portal, the operator of its
factory decides it with fewer GPU-hours, and the applicant sees the decision and no
reviewer identity; the federation admin's dashboard draws its charts. The data around the
browser part is set up through the API and the CLI. Screenshots of the reviewer's, the
operator's and the admin's main pages go to docs/screenshots/."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page

from tests.browser import browser_page
from tests.cli.server import Server
from tests.cli.test_jobs_e2e import Cli
from tests.cli.test_portal_browser import SCREENSHOTS, Inbox, inbox

pytestmark = pytest.mark.slow
__all__ = ["inbox"]  # the fixture, used by name


def _api(server: Server, method: str, path: str, token: str, **body: Any) -> Any:
    response = httpx.request(method, f"{server.url}/api/v1{path}", json=body or None,
                             headers={"Authorization": f"Bearer {token}"}, timeout=30)  # fmt: skip
    assert response.status_code < 300, response.text
    return response.json()


def _sign_in(page: Page, server: Server, mail: Inbox, email: str) -> None:
    page.goto(f"{server.url}/sign-in")
    page.fill("#email", email)
    page.click("text=Email me a sign-in link")
    assert "Check your email" in page.inner_text("main")
    page.goto(mail.link(email))
    assert email in page.inner_text("header")


def test_a_reviewer_scores_an_operator_decides_with_fewer_gpu_hours(
    server: Server, inbox: tuple[Inbox, int]
) -> None:
    mail, port = inbox
    server.env.update(
        FABBRICA_SMTP_HOST="127.0.0.1",
        FABBRICA_SMTP_PORT=str(port),
        FABBRICA_LOOP_INTERVAL_SECONDS="0.2",
    )  # links mailed at once
    server.start()
    admin_url = re.search(r"(http://\S+/sign-in/\S+)", server.output())
    assert admin_url is not None, server.output()
    users = {}
    for email, role, extra in (
        ("pi@startup.it", "user", {}),
        ("op@it4lia.it", "operator", {"factories": ["it4lia"]}),
        ("r0@review.eu", "reviewer", {}),
        ("r1@review.eu", "reviewer", {}),
    ):
        users[email] = _api(server, "POST", "/users", "t", email=email, name=email.split("@")[0],
                            role=role, **extra)  # fmt: skip
    pi = users["pi@startup.it"]["token"]
    org = _api(server, "POST", "/organisations", pi, name="Startup srl", country="IT",
               type="startup", sector="manufacturing")  # fmt: skip
    project = _api(server, "POST", "/projects", pi, title="Italian LLM", org_id=org["id"])["id"]
    applicant = Cli(server, pi)
    proposal = applicant.run("apply", "--project", project, "--call", "it4lia-large-scale",
                             "--gpu-hours", "80000", "--months", "6", "--abstract", "A 7B model",
                             "--declare-civilian-ai-act", "--json")  # fmt: skip
    assert proposal["state"] == "in_review"
    pid = proposal["id"]
    operator = users["op@it4lia.it"]["token"]
    for email in ("r0@review.eu", "r1@review.eu"):
        _api(server, "POST", f"/proposals/{pid}/reviewers", operator,
             reviewer_id=users[email]["id"])  # fmt: skip
    _api(server, "POST", f"/proposals/{pid}/reviews", users["r1@review.eu"]["token"], score=3,
         comment="feasible, data plan thin")  # fmt: skip

    with browser_page() as browsed:
        page = browsed.page
        _sign_in(page, server, mail, "r0@review.eu")
        page.click("header >> text=Reviews")
        assert "to review" in page.inner_text("table")
        page.screenshot(path=str(SCREENSHOTS / "portal-reviewer.png"), full_page=True)
        page.click(f"a[href='/review/{pid}']")
        assert "feasible" not in page.inner_text("main")  # never another reviewer's review
        page.check("input[name=score][value='4']")
        page.fill("#comment", "solid plan")
        page.click("text=Submit the review")
        assert "You scored it 4 of 5" in page.inner_text("main")
        page.click("text=Sign out")

        _sign_in(page, server, mail, "op@it4lia.it")
        page.click("header >> text=Operate")
        row = page.inner_text(f"tr:has(a[href='/operate/proposals/{pid}'])")
        assert "2 of 2" in row and "working days" in row, row
        page.screenshot(path=str(SCREENSHOTS / "portal-operator.png"), full_page=True)
        page.click(f"a[href='/operate/proposals/{pid}']")
        assert "r0@review.eu" in page.inner_text("main")  # operators see who reviewed
        page.check("input[name=decision][value=accept]")
        page.fill("#gpu_hours", "60000")
        page.fill("#reason", "partial grant: the data plan is thin")
        page.click("text=Record the decision")
        assert "60,000 GPU-hours granted" in page.inner_text("main")
        page.click("text=Sign out")

        # the applicant: the decision and the reviews, never who wrote them
        seen = applicant.run("proposal", str(pid), "--json")
        assert seen["state"] == "accepted" and seen["allocation"]["gpu_hours"] == 60000
        assert sorted(r["score"] for r in seen["reviews"]) == [3, 4]
        assert "review.eu" not in str(seen) and all("reviewer_id" not in r for r in seen["reviews"])
        _sign_in(page, server, mail, "pi@startup.it")
        for path in (f"/operate/proposals/{pid}", f"/review/{pid}", "/dashboard"):
            response = page.goto(f"{server.url}{path}")
            assert response is not None and response.status == 404, path
            assert "review.eu" not in page.content()
        browsed.errors.clear()  # the 404s above are logged by the console
        page.goto(f"{server.url}/")
        page.click("text=Sign out")

        page.goto(admin_url[1])
        page.click("header >> text=Dashboard")
        assert page.locator("svg[role=img]").count() == 6
        assert "60,000" in page.inner_text("#chart-access-mode table")
        page.screenshot(path=str(SCREENSHOTS / "portal-dashboard.png"), full_page=True)
        page.set_viewport_size({"width": 390, "height": 844})  # a phone: nothing wider
        page.reload()
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        assert browsed.errors == []
