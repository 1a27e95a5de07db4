"""A startup founder in a real Chromium against a real `fabbrica up` (both databases),
from the sign-in link to a trained model without a terminal: an organisation, a project,
an application to the Playground call on `local` whose broken rules are named live while
typing (a US company, GPU-hours out of range, a duration the mode does not offer), the
automatic acceptance, the allocation's balance, then the digits example. Screenshots of
the applicant's and the member's pages go to docs/screenshots/; axe-core finds no serious or
critical violation on them (the form with its broken rules shown included)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
from playwright.sync_api import Page

from tests.browser import browser_page
from tests.cli.server import Server
from tests.cli.test_portal_browser import SCREENSHOTS, Inbox, inbox  # noqa: F401 (a fixture)

pytestmark = pytest.mark.slow


def refusals_include(page: Page, text: str) -> None:
    """Wait until the live list of broken rules says `text` (htmx swaps it in)."""
    page.wait_for_function(
        "text => document.querySelector('#refusals').textContent.includes(text)",
        arg=text,
        timeout=10_000,
    )


def broken_fields_are(page: Page, *fields: str) -> None:
    """Wait until the live list names exactly these rules, in this order."""
    page.wait_for_function(
        """fields => Array.from(document.querySelectorAll('#refusals li'))
            .map(li => li.dataset.field).join(',') === fields""",
        arg=",".join(fields),
        timeout=10_000,
    )


def organisation(page: Page, name: str, country: str, type: str) -> None:
    page.click("header >> text=Projects")
    page.fill("#org-name", name)
    page.fill("#country", country)
    page.select_option("#type", type)
    page.click("text=Create the organisation")
    assert page.inner_text("h1") == name


def project(page: Page, title: str, org: str) -> str:
    page.click("header >> text=Projects")
    page.fill("#title", title)
    page.select_option("#org_id", label=org)
    page.select_option("#mode", "playground")
    page.click("text=Create the project")
    found = re.search(r"/projects/(FAB-[\w-]+)$", page.url)
    assert found is not None, page.url
    return found[1]


def test_a_founder_applies_in_the_browser_and_runs_the_digits_example(
    server: Server,
    inbox: tuple[Inbox, int],  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    mail, port = inbox
    python_bin = str(Path(sys.executable).parent)  # the job's `python` has scikit-learn
    server.env.update(
        FABBRICA_SMTP_HOST="127.0.0.1",
        FABBRICA_SMTP_PORT=str(port),
        FABBRICA_LOCAL_GPUS="2",
        FABBRICA_LOOP_INTERVAL_SECONDS="0.2",
        PATH=f"{python_bin}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    server.start()
    with browser_page() as browsed:
        page = browsed.page
        page.goto(f"{server.url}/sign-in")
        page.fill("#email", "founder@orbit.it")
        page.click("text=Email me a sign-in link")
        page.goto(mail.link("founder@orbit.it"))
        assert "founder@orbit.it" in page.inner_text("header")

        organisation(page, "Acme Inc", "US", "large_industry")
        project(page, "Acme vision", "Acme Inc")
        organisation(page, "Orbit Srl", "IT", "startup")
        ours = project(page, "Ship detection", "Orbit Srl")
        page.click("header >> text=Projects")
        browsed.assert_accessible()
        page.screenshot(path=str(SCREENSHOTS / "portal-projects.png"), full_page=True)
        page.goto(f"{server.url}/projects/{ours}")
        page.click("text=Apply to a call")
        page.click('a[href^="/calls/local-playground/apply"]')
        assert page.input_value("#project") == ours

        # live eligibility: each broken rule named while typing, for the chosen project
        page.fill("#gpu_hours", "900000")
        refusals_include(page, "grants at most 5,000 GPU-hours; 900,000 requested")
        page.fill("#months", "7")
        refusals_include(page, "offers 1, 2, 3 months, not 7")
        acme = page.locator("#project option", has_text="Acme vision").get_attribute("value")
        page.select_option("#project", acme)
        refusals_include(page, "organisation country US is not eligible")
        broken_fields_are(page, "country", "gpu_hours", "months", "declare_civilian_ai_act")
        browsed.assert_accessible()
        page.screenshot(path=str(SCREENSHOTS / "portal-apply.png"), full_page=True)
        page.select_option("#project", ours)
        page.fill("#gpu_hours", "50")
        page.fill("#months", "1")
        broken_fields_are(page, "declare_civilian_ai_act")
        page.check('input[name="declare"]')
        refusals_include(page, "Eligible")
        page.click("text=Submit the application")
        assert "Accepted, decided automatically" in page.inner_text("main")
        page.click('a[href^="/allocations/"]')
        assert "0 used (solid) · 0 reserved (hatched) · 50 granted" in page.inner_text("main")
        browsed.assert_accessible()

        # the member's side: the digits example on the new allocation, then its balance
        page.click("header >> text=Jobs")
        page.select_option("#project", ours)
        page.click("text=Run the digits example")
        assert re.fullmatch(rf"{server.url}/jobs/\d+", page.url), page.inner_text("main")
        page.wait_for_function(  # the job has ended, one way or another
            "/succeeded|failed|cancelled|timed_out/.test("
            "document.querySelector('#job-state').textContent)",
            timeout=180_000,
        )
        assert "succeeded" in page.inner_text("#job-state"), page.inner_text("main")[-2000:]
        page.reload()
        with page.expect_download() as download:
            page.click('#outputs a[href$="model.pkl"]')
        saved = tmp_path / "model.pkl"
        download.value.save_as(saved)
        assert saved.stat().st_size > 1000
        page.click("header >> text=Allocations")
        text = page.inner_text("main")
        used = re.search(r"([\d.]+) used \(solid\) · 0 reserved \(hatched\) · 50 granted", text)
        assert used is not None and float(used[1]) > 0, text  # the job's GPU-hours
        browsed.assert_accessible()
        page.screenshot(path=str(SCREENSHOTS / "portal-allocations.png"), full_page=True)
        page.goto(f"{server.url}/projects/{ours}")
        browsed.assert_accessible()
        page.screenshot(path=str(SCREENSHOTS / "portal-project.png"), full_page=True)

        # a job from a template's form: a refusal names the parameter, then it is queued
        page.click("header >> text=Jobs")
        page.click("text=Or start from a job template")
        browsed.assert_accessible()
        page.click('a[href="/templates/digits-classifier"]')
        page.select_option("#project", ours)
        page.fill("#p_epochs", "0")  # below its minimum: the browser's own check first
        assert page.evaluate("document.querySelector('#p_epochs').validity.rangeUnderflow")
        page.evaluate("document.querySelector('form.stack').noValidate = true")
        page.click("text=Run it")
        assert "parameters.epochs" in page.inner_text('[role="alert"]')
        assert page.get_attribute("#p_epochs", "aria-invalid") == "true"
        assert "status of 422" in browsed.errors.pop()  # the refusal's page, as it should
        browsed.assert_accessible()
        page.screenshot(path=str(SCREENSHOTS / "portal-template.png"), full_page=True)
        page.fill("#p_epochs", "20")
        page.click("text=Run it")
        assert re.fullmatch(rf"{server.url}/jobs/\d+", page.url), page.inner_text("main")
        assert "digits-classifier" in page.inner_text("main")
        assert browsed.errors == []
