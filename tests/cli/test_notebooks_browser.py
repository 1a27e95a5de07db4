"""A notebook from the portal in a real Chromium against a real `fabbrica up`: the member
starts one on `local` from /notebooks, opens it through Fabbrica's URL, runs a cell in
JupyterLab's own interface that computes 45 and writes a file, and sees 45 (the kernel's
WebSocket goes through the proxy); the page warns that its time limit is near, in the
portal and under the cell. Stopped from the portal, the job is charged GPUs x the time it
ran and the file is in its outputs. Screenshots go to docs/screenshots/."""

from __future__ import annotations

import io
import re
import tarfile
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Page

from tests.browser import browser_page
from tests.cli import test_portal_browser
from tests.cli.server import Server, clean_env
from tests.cli.test_jobs_e2e import startup
from tests.cli.test_notebooks_e2e import hours_between
from tests.cli.test_portal_browser import SCREENSHOTS, Inbox

pytestmark = pytest.mark.slow
inbox = test_portal_browser.inbox  # the real SMTP server the sign-in links arrive at
CELL = "open('result.txt', 'w').write('45\\n'); sum(range(10))"


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("server")
    srv = Server(data_dir=home / "data", env=clean_env(FABBRICA_BOOTSTRAP_TOKEN="t"),
                 log=home / "up.log")  # fmt: skip
    yield srv
    srv.stop()


def run_cell(lab: Page) -> None:
    """In JupyterLab's own interface: a new notebook, CELL run once its kernel is idle (a
    cell run before the kernel connected is lost), and 45 under it."""
    lab.click('.jp-LauncherCard[data-category="Notebook"]', timeout=120_000)
    lab.wait_for_selector("text=Python 3 (ipykernel) | Idle", timeout=120_000)
    lab.click(".jp-Notebook .jp-Cell .cm-content")
    lab.keyboard.type(CELL)
    lab.keyboard.press("Shift+Enter")
    output = ".jp-OutputArea-output[data-mime-type='text/plain']"
    lab.wait_for_selector(f"{output}:has-text('45')", timeout=60_000)


def test_a_notebook_from_the_portal_runs_a_cell(server: Server, inbox: tuple[Inbox, int]) -> None:
    mail, port = inbox
    server.env.update(FABBRICA_SMTP_HOST="127.0.0.1", FABBRICA_SMTP_PORT=str(port))
    cli, _ = startup(server)  # eng@startup.it, a Playground allocation on `local`
    with browser_page() as browsed:
        page = browsed.page
        page.goto(f"{server.url}/sign-in")
        page.fill("#email", "eng@startup.it")
        page.click("text=Email me a sign-in link")
        page.goto(mail.link("eng@startup.it"))

        page.click("header >> text=Notebooks")
        page.fill("#gpus", "2")
        page.fill("#hours", "0.1")  # 6 minutes: within the warning's 10 from the start
        page.click("text=Start a notebook")
        page.wait_for_url(re.compile(r".*#notebook-\d+$"))
        found = re.search(r"#notebook-(\d+)$", page.url)
        assert found is not None, page.url
        job_id = int(found[1])
        row = f"#notebook-{job_id}"
        # the list refreshes itself until JupyterLab answers
        page.wait_for_selector(f"{row} a:has-text('Open')", timeout=180_000)
        warning = page.inner_text(f"#ending-{job_id}")
        assert f"Notebook {job_id} ends at" in warning and "time limit" in warning, warning
        assert "time limit" in page.inner_text(row)
        browsed.assert_accessible()
        page.screenshot(path=str(SCREENSHOTS / "portal-notebooks.png"), full_page=True)

        with page.expect_popup() as popup:
            page.click(f"{row} a:has-text('Open')")
        lab = popup.value
        lab.wait_for_load_state()
        assert lab.url == f"{server.url}/notebooks/{job_id}/lab"
        run_cell(lab)
        # the kernel's warning under the cell: the time limit is within 10 minutes
        lab.wait_for_selector("text=reaches its time limit at", timeout=10_000)
        lab.screenshot(path=str(SCREENSHOTS / "notebook-lab.png"))
        lab.close()

        page.click(f"{row} button:has-text('Stop')")
        page.wait_for_selector(f"{row} .state-cancelled", timeout=60_000)
        assert browsed.errors == [], browsed.errors

    job = cli.run("job", str(job_id), "--json")
    assert job["state"] in ("succeeded", "cancelled") and job["gpus"] == 2
    assert job["gpu_hours"] == pytest.approx(2 * hours_between(job), rel=0.02, abs=2e-4)
    outputs = httpx.get(
        f"{server.url}/api/v1/jobs/{job_id}/outputs",
        headers={"Authorization": f"Bearer {cli.token}"},
        timeout=60,
    )
    outputs.raise_for_status()
    with tarfile.open(fileobj=io.BytesIO(outputs.content)) as tar:
        member = next(n for n in tar.getnames() if n.endswith("result.txt"))
        extracted = tar.extractfile(member)
        assert extracted is not None and extracted.read() == b"45\n"
