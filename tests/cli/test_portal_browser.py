"""The portal in a real Chromium against a real `fabbrica up` (both databases): the first
admin's sign-in URL works once; a startup engineer signs in with the link the real SMTP
server received, starts the digits example, watches its log arrive without reloading,
and downloads model.pkl. axe-core finds no serious or critical violation on the pages, the
job's page with its log live included. Screenshots go to docs/screenshots/."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope
from aiosmtpd.smtp import Session as SmtpSession

from tests.browser import browser_page
from tests.cli.server import Server, free_port
from tests.cli.test_jobs_e2e import startup

pytestmark = pytest.mark.slow
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


class Inbox:
    def __init__(self) -> None:
        self.messages: list[str] = []

    async def handle_DATA(self, server: SMTP, session: SmtpSession, envelope: Envelope) -> str:
        content = envelope.content
        self.messages.append(content.decode() if isinstance(content, bytes) else str(content))
        return "250 OK"

    def link(self, to: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.messages:
                found = re.search(r"(http://\S+/sign-in/\S+)", message)
                if f"To: {to}" in message and found:
                    return found[1]
            time.sleep(0.1)
        raise AssertionError(f"no sign-in link for {to} within {timeout} s: {self.messages}")


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    handler = Inbox()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, port
    controller.stop()


def test_from_the_sign_in_link_to_a_downloaded_model(
    server: Server, inbox: tuple[Inbox, int], tmp_path: Path
) -> None:
    mail, port = inbox
    server.env.update(FABBRICA_SMTP_HOST="127.0.0.1", FABBRICA_SMTP_PORT=str(port))
    startup(server)  # eng@startup.it, with a Playground allocation on `local`
    admin_url = re.search(r"(http://\S+/sign-in/\S+)", server.output())
    assert admin_url is not None, server.output()
    with browser_page() as browsed:
        page = browsed.page
        # the first admin's URL, printed by `fabbrica up`: once, and never again
        page.goto(admin_url[1])
        assert page.url == f"{server.url}/" and "admin@localhost" in page.inner_text("header")
        page.click("text=Sign out")
        page.goto(admin_url[1])
        assert "unknown, used or expired" in page.inner_text("main")
        assert browsed.errors == ["Failed to load resource: the server responded with a status "
                                  "of 401 (Unauthorized)"]  # fmt: skip
        browsed.errors.clear()

        page.goto(f"{server.url}/")
        browsed.assert_accessible()
        page.screenshot(path=str(SCREENSHOTS / "portal-catalog.png"))
        page.click("header >> text=Sign in")
        page.fill("#email", "eng@startup.it")
        page.click("text=Email me a sign-in link")
        assert "Check your email" in page.inner_text("main")
        page.goto(mail.link("eng@startup.it"))
        assert "eng@startup.it" in page.inner_text("header")

        page.click("text=Jobs")
        page.click("text=Run the digits example")
        assert re.fullmatch(rf"{server.url}/jobs/\d+", page.url), page.url
        # the log arrives while the page stays open (htmx), and the state follows
        browsed.assert_accessible()  # while the job runs
        for text in ("on GPU(s)", "test accuracy"):
            page.wait_for_function(
                f"document.querySelector('#log').textContent.includes('{text}')",
                timeout=180_000,
            )
        page.wait_for_function(
            "document.querySelector('#job-state').textContent.includes('succeeded')",
            timeout=30_000,
        )
        page.reload()
        browsed.assert_accessible()
        page.screenshot(path=str(SCREENSHOTS / "portal-job.png"), full_page=True)
        with page.expect_download() as download:
            page.click('#outputs a[href$="model.pkl"]')
        saved = tmp_path / "model.pkl"
        download.value.save_as(saved)
        assert saved.stat().st_size > 1000
        page.goto(f"{server.url}/jobs")
        assert "succeeded" in page.inner_text("table")
        browsed.assert_accessible()
        page.screenshot(path=str(SCREENSHOTS / "portal-jobs.png"), full_page=True)
        assert browsed.errors == []
