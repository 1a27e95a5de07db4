"""The review and decision of a Large Scale proposal in a real Chromium against a real
`fabbrica up` (both databases): a reviewer scores it from the portal, the operator of its
factory decides it with fewer GPU-hours, and the applicant sees the decision and the
reviews in the browser, in Italian, and no reviewer identity; the federation admin's
dashboard draws its charts. axe-core finds no serious or critical violation on any page
visited. The data around the browser part is set up through the API and the CLI.
Screenshots of the reviewer's, the operator's, the applicant's (in Italian) and the admin's
main pages go to docs/screenshots/."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page

from tests.browser import Browsed, browser_page
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


def _audit(browsed: Browsed, server: Server, *paths: str) -> None:
    """Open each page and run axe-core on it."""
    for path in paths:
        response = browsed.page.goto(f"{server.url}{path}")
        assert response is not None and response.status == 200, path
        browsed.assert_accessible()


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
        _audit(browsed, server, "/", "/factories/it4lia", "/sign-in")
        _sign_in(page, server, mail, "r0@review.eu")
        page.click("header >> text=Reviews")
        assert "to review" in page.inner_text("table")
        browsed.assert_accessible()
        page.screenshot(path=str(SCREENSHOTS / "portal-reviewer.png"), full_page=True)
        page.click(f"a[href='/review/{pid}']")
        assert "feasible" not in page.inner_text("main")  # never another reviewer's review
        page.check("input[name=score][value='4']")
        page.fill("#comment", "solid plan")
        page.click("text=Submit the review")
        assert "You scored it 4 of 5" in page.inner_text("main")
        browsed.assert_accessible()
        page.click("text=Sign out")

        _sign_in(page, server, mail, "op@it4lia.it")
        page.click("header >> text=Operate")
        row = page.inner_text(f"tr:has(a[href='/operate/proposals/{pid}'])")
        assert "2 of 2" in row and "working days" in row, row
        browsed.assert_accessible()
        page.screenshot(path=str(SCREENSHOTS / "portal-operator.png"), full_page=True)
        page.click(f"a[href='/operate/proposals/{pid}']")
        assert "r0@review.eu" in page.inner_text("main")  # operators see who reviewed
        browsed.assert_accessible()
        page.check("input[name=decision][value=accept]")
        page.fill("#gpu_hours", "60000")
        page.fill("#reason", "partial grant: the data plan is thin")
        page.click("text=Record the decision")
        assert "60,000 GPU-hours granted" in page.inner_text("main")
        allocation = page.locator("a[href^='/operate/allocations/']").first.get_attribute("href")
        assert allocation is not None
        _audit(browsed, server, "/operate/calls", "/operate/calls/it4lia-large-scale",
               "/operate/allocations", allocation, "/operate/agents")  # fmt: skip
        page.click("text=Sign out")

        # the applicant, in Italian: the decision and the reviews, never who wrote them
        _sign_in(page, server, mail, "pi@startup.it")
        page.click("header >> text=Italiano")
        page.goto(f"{server.url}/projects/{project}")
        page.click(f"a[href='/proposals/{pid}']")
        main = page.inner_text("main")
        assert "Accepted" not in main and "Accettata" in main, main
        assert "60.000 ore GPU assegnate" in main and "partial grant" in main, main
        assert "Punteggio 3 su 5" in main and "Punteggio 4 su 5" in main, main
        assert "feasible, data plan thin" in main and "solid plan" in main
        assert "review.eu" not in page.content() and "r0" not in main and "r1" not in main
        browsed.assert_accessible()
        page.screenshot(path=str(SCREENSHOTS / "portal-proposal-it.png"), full_page=True)
        _audit(browsed, server, f"/projects/{project}", "/projects", "/allocations", "/jobs",
               "/notices", "/usage", "/account", "/apply",
               "/calls/it4lia-large-scale/apply")  # fmt: skip
        page.click("header >> text=English")
        for path in (f"/operate/proposals/{pid}", f"/review/{pid}", "/dashboard"):
            response = page.goto(f"{server.url}{path}")
            assert response is not None and response.status == 404, path
            assert "review.eu" not in page.content()
        browsed.assert_accessible()  # the error page too
        browsed.errors.clear()  # the 404s above are logged by the console
        page.goto(f"{server.url}/")
        page.click("text=Sign out")

        page.goto(admin_url[1])
        page.click("header >> text=Dashboard")
        assert page.locator("svg[role=img]").count() == 6
        assert "60,000" in page.inner_text("#chart-access-mode table")
        browsed.assert_accessible()
        page.screenshot(path=str(SCREENSHOTS / "portal-dashboard.png"), full_page=True)
        page.set_viewport_size({"width": 390, "height": 844})  # a phone: nothing wider
        page.reload()
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        assert browsed.errors == []
