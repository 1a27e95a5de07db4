"""The federation report's page and CSV from a report's JSON, without a server: an empty
period still draws every chart with its title and labels, and the CSV holds every figure."""

from __future__ import annotations

import csv
import io
import re
from typing import Any

from fabbrica.cli.report_html import render
from fabbrica.cli.report_tables import tables, to_csv

ZERO = {"granted_gpu_hours": 0.0, "allocations": 0, "used_gpu_hours": 0.0, "usage_records": 0}


def report(rows: bool) -> dict[str, Any]:
    row = {"key": "IT", "granted_gpu_hours": 10.0, "allocations": 1, "used_gpu_hours": 2.5,
           "usage_records": 3}  # fmt: skip
    dims = ("member_state", "factory", "sector", "organisation_type", "access_mode")
    return {
        "period": {
            "from": "2026-10-01T00:00:00+00:00",
            "to": "2026-11-01T00:00:00+00:00",
            "hours": 744.0,
        },
        "factories": ["it4lia"] if rows else [],
        "totals": {**ZERO, **({k: v for k, v in row.items() if k != "key"} if rows else {})},
        "by": {d: [row] if rows else [] for d in dims},
        "startups_and_smes": {
            "granted_gpu_hours": 0.0,
            "used_gpu_hours": 0.0,
            "granted_share": 0.0 if rows else None,
            "used_share": None,
        },
        "decisions": [
            {
                "mode": "fast_lane",
                "target_working_days": 4,
                "decisions": 2,
                "within_target": 1,
                "within_target_share": 0.5,
                "median_working_days": 3.5,
                "p90_working_days": 6.0,
            }
        ]
        if rows
        else [],
        "time_to_first_job": [
            {
                "mode": "fast_lane",
                "allocations": 1,
                "started": 0,
                "median_hours": None,
                "p90_hours": None,
            }
        ]
        if rows
        else [],
        "utilisation": [
            {
                "factory": "it4lia",
                "gpus": 4,
                "operated_gpu_hours": 2976.0,
                "used_gpu_hours": 2.5,
                "utilisation": 2.5 / 2976,
            }
        ]
        if rows
        else [],
        "funding": [
            {
                "factory": "it4lia",
                "eu_gpu_hours": 10.0,
                "national_gpu_hours": 0.0,
                "eu_share": 1.0,
                "eu_share_target": 0.5,
            }
        ]
        if rows
        else [],
    }


def test_every_chart_has_its_title_and_labels_even_when_empty() -> None:
    for rows in (True, False):
        page = render(report(rows))
        svgs = re.findall(r"<svg.*?</svg>", page, flags=re.S)
        assert len(svgs) == 5
        text = " ".join(re.findall(r"<text[^>]*>([^<]*)</text>", page))
        for words in (
            "Utilisation per factory",
            "time to decision (working days)",
            "EU share of granted GPU-hours (%)",
            "member state of the organisation",
        ):
            assert words in text  # fmt: skip
        assert "2026-10-01 to 2026-11-01 (excluded)" in page


def test_user_text_is_escaped_in_the_page() -> None:
    data = report(True)
    data["by"]["sector"] = [{**data["by"]["sector"][0], "key": "<b>x</b>"}]
    page = render(data)
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page


def test_the_csv_holds_every_figure_of_the_tables() -> None:
    data = report(True)
    rows = list(csv.DictReader(io.StringIO(to_csv(data))))
    got = {(r["section"], r["key"], r["field"]): r["value"] for r in rows}
    assert got[("by_member_state", "IT", "used_gpu_hours")] == "2.5"
    assert got[("decisions", "fast_lane", "p90_working_days")] == "6.0"
    assert got[("time_to_first_job", "fast_lane", "median_hours")] == ""
    assert got[("funding", "it4lia", "eu_share_target")] == "0.5"
    titles = [t.title for t in tables(data)]
    assert "EU calls and national access per factory" in titles and len(titles) == 11
