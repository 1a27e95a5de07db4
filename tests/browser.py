"""Headless Chromium for the browser tests: Debian's /usr/bin/chromium driven by the
playwright package (never `playwright install`: no browser is downloaded). A test opens a
page, collects console errors and takes screenshots, and runs axe-core on it (the copy
pinned with the axe-playwright-python package: nothing is fetched)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from axe_playwright_python.base import AXE_SCRIPT
from playwright.sync_api import Page, sync_playwright

from tests.conftest import need_service

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@dataclass
class Browsed:
    """A page and what its console said at the level `error` (and uncaught exceptions)."""

    page: Page
    errors: list[str] = field(default_factory=list)
    audited: list[str] = field(default_factory=list)  # the pages axe-core found clean

    def assert_accessible(self) -> None:
        """axe-core on the page as it is now: no violation of impact serious or critical."""
        found = accessibility_violations(self.page)
        assert found == [], (self.page.url, found)
        self.audited.append(self.page.url)


BLOCKING = ("serious", "critical")


def accessibility_violations(page: Page) -> list[str]:
    """axe-core's violations of impact serious or critical, each with where it was found."""
    if not page.evaluate("typeof window.axe === 'object'"):
        page.evaluate(AXE_SCRIPT)
    results = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [
        f"{v['id']} ({v['impact']}): {v['help']}: "
        + "; ".join(" ".join(node["target"]) for node in v["nodes"][:5])
        for v in results["violations"]
        if v["impact"] in BLOCKING
    ]


@contextmanager
def browser_page(width: int = 1280, height: int = 900) -> Iterator[Browsed]:
    """One page of a fresh headless Chromium; missing Chromium fails on CI, skips elsewhere."""
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        need_service(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            browsed = Browsed(page)
            page.on(
                "console",
                lambda message: (
                    browsed.errors.append(message.text) if message.type == "error" else None
                ),
            )
            page.on("pageerror", lambda error: browsed.errors.append(str(error)))
            yield browsed
        finally:
            browser.close()
