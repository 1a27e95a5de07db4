"""GET /reports/federation: the period from the query, bad input as 422 naming the field."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.api.helpers import API, assert_error

URL = f"{API}/reports/federation"


def test_the_report_of_a_period(api: TestClient, admin: dict[str, str]) -> None:
    r = api.get(URL, headers=admin, params={"from": "2026-11-01", "to": "2026-11-08"})
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["period"] == {
        "from": "2026-11-01T00:00:00+00:00",
        "to": "2026-11-08T00:00:00+00:00",
        "hours": 168.0,
    }
    assert data["totals"]["usage_records"] == 0
    it4lia = next(row for row in data["utilisation"] if row["factory"] == "it4lia")
    assert it4lia["operated_gpu_hours"] == it4lia["gpus"] * 168 > 0
    # without dates: the last full month before the clock's day (2026-11-21)
    r = api.get(URL, headers=admin)
    assert r.json()["period"]["from"] == "2026-10-01T00:00:00+00:00"
    assert r.json()["period"]["to"] == "2026-11-01T00:00:00+00:00"
    r = api.get(URL, headers=admin, params={"factory": "it4lia", "from": "2026-11-01"})
    assert r.json()["factories"] == ["it4lia"]
    assert r.json()["period"]["to"] == "2026-11-22T00:00:00+00:00"  # today included


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "2026-13-01"}, "from"),
        ({"to": "not-a-date"}, "to"),
        ({"to": "0"}, "to"),  # not a Unix time either
        ({"from": "2026-11-01T00:00:00"}, "from"),
        ({"from": "2026-02-30"}, "from"),
        ({"from": "2026-11-02", "to": "2026-11-01"}, "from"),
        ({"from": "2026-11-01", "to": "2026-11-01"}, "from"),
        ({"to": "0001-01-01"}, "to"),
        ({"from": "9999-12-31"}, "from"),
        ({"factory": "atlantis"}, "factory"),
        ({"factory": "it4lia/../x"}, "factory"),
    ],
)
def test_bad_input_is_a_422_naming_the_field(
    api: TestClient, admin: dict[str, str], params: dict[str, str], field: str
) -> None:
    assert_error(api.get(URL, headers=admin, params=params), 422, "invalid", field)
