"""`fabbrica report federation` through the real CLI against a real `fabbrica up` on
PostgreSQL: the JSON equals independent SQL, the HTML page renders in Chromium with titled,
labelled charts, and bad input exits 2."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fabbrica.catalog.local import local_factory
from fabbrica.catalog.model import Catalog
from fabbrica.store.db import Database
from tests.browser import browser_page
from tests.cli.server import Server, clean_env, fabbrica
from tests.conftest import REPO, PostgresServer
from tests.federation_data import END, START, assert_same, expected, generate, report_catalog

pytestmark = pytest.mark.slow
PERIOD = ("--from", "2026-10-01", "--to", "2026-11-01")
SCREENSHOT = REPO / "docs" / "screenshots" / "federation-report.png"


@dataclass
class Federation:
    server: Server
    db: Database
    catalog: Catalog
    env: dict[str, str]


@pytest.fixture(scope="module")
def federation(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer
) -> Iterator[Federation]:
    """One server for the module, on PostgreSQL, with a catalog that has a national mode;
    the seeded federation written into its database."""
    home = tmp_path_factory.mktemp("report")
    catalog, catalog_path = report_catalog(home)
    catalog = catalog.with_factory(local_factory(4))  # what `fabbrica up` adds
    url = postgres_server.create()
    env = clean_env(
        FABBRICA_DATABASE_URL=url,
        FABBRICA_BOOTSTRAP_TOKEN="t",
        FABBRICA_CATALOG=str(catalog_path),
        FABBRICA_LOCAL_GPUS="4",
    )
    server = Server(data_dir=home / "data", env=env, log=home / "up.log").start()
    db = Database(url)
    try:
        with db.session() as session:
            generate(session, catalog)
        yield Federation(server, db, catalog, server.client_env("t"))
    finally:
        server.stop()
        db.dispose()
        postgres_server.drop(url)


def test_the_json_equals_independent_sql(federation: Federation) -> None:
    done = fabbrica("report", "federation", *PERIOD, "--format", "json", env=federation.env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    with federation.db.session() as session:
        want = expected(session, federation.catalog, START, END)
    assert_same(report, want)
    assert report["period"] == {
        "from": "2026-10-01T00:00:00+00:00",
        "to": "2026-11-01T00:00:00+00:00",
        "hours": 744.0,
    }
    # CSV: the same figures, one a line
    done = fabbrica("report", "federation", *PERIOD, "--format", "csv", env=federation.env)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    totals = {r["field"]: r["value"] for r in rows if r["section"] == "totals"}
    assert float(totals["used_gpu_hours"]) == pytest.approx(want["totals"]["used_gpu_hours"])
    assert int(totals["usage_records"]) == want["totals"]["usage_records"]
    # the table for people
    done = fabbrica("report", "federation", *PERIOD, "--factory", "it4lia", env=federation.env)
    assert done.returncode == 0, done.stderr
    assert "Utilisation per factory" in done.stdout and "it4lia" in done.stdout
    assert "jaif" not in done.stdout


def test_the_html_page_renders_with_titled_labelled_charts(
    federation: Federation, tmp_path: Path
) -> None:
    out = tmp_path / "report.html"
    done = fabbrica(
        "report", "federation", *PERIOD, "--format", "html", "--out", str(out), env=federation.env
    )
    assert done.returncode == 0, done.stderr
    page_html = out.read_text()
    # self-contained: no script, stylesheet, image or font to fetch
    assert not re.search(r"<script|<link|<img|src=|url\((?!#)|@import", page_html)
    svgs = re.findall(r"<svg.*?</svg>", page_html, flags=re.S)
    assert len(svgs) == 5
    texts = [" ".join(re.findall(r"<text[^>]*>([^<]*)</text>", svg)) for svg in svgs]
    for title, unit in (
        ("GPU-hours granted and used by member state", "GPU-hours"),
        ("GPU-hours granted and used by access mode", "GPU-hours"),
        ("Utilisation per factory", "utilisation (% of GPU-hours operated)"),
        ("Time to decision per access mode", "time to decision (working days)"),
        ("GPU-hours granted through EU calls per factory", "EU share of granted GPU-hours (%)"),
    ):
        chart = next((t for t in texts if title in t), None)
        assert chart is not None, f"no chart titled {title!r}"
        assert unit in chart, f"{title}: no axis label with its unit {unit!r}"
    assert all(re.search(r"factory|member state|access mode", t) for t in texts)  # x labels
    with browser_page(width=1280, height=900) as browsed:
        browsed.page.goto(out.as_uri())
        headings = browsed.page.locator("h2").all_inner_texts()
        assert "Utilisation per factory" in headings
        assert browsed.page.locator("svg").count() == 5
        box = browsed.page.locator("svg").first.bounding_box()
        assert box is not None and box["width"] > 300 and box["height"] > 100
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        browsed.page.screenshot(path=str(SCREENSHOT), full_page=False)
        assert browsed.errors == []
    assert SCREENSHOT.stat().st_size > 10_000


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--from", "2026-13-01"), "is not a date"),
        (("--to", "yesterday"), "is not a date"),
        (("--from", "2026-11-01", "--to", "2026-10-01"), "must be before"),
        (("--from", "2026-11-01", "--to", "2026-11-01"), "must be before"),
        (("--factory", "atlantis"), "no factory 'atlantis'"),
        (("--format", "pdf"), "pdf"),
    ],
)
def test_bad_input_exits_2_with_a_message(
    federation: Federation, args: tuple[str, ...], says: str
) -> None:
    done = fabbrica("report", "federation", *args, env=federation.env)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert says in done.stderr
    assert done.stdout == ""
