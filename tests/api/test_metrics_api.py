"""`/metrics` through the real app: the format (promtool), the scrape token, request latency
by route template, one registry per app."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from fabbrica.api.app import create_app
from fabbrica.api.deps import AppContext
from tests.conftest import bearer, need_service
from tests.db.metrics_seed import seed


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_need_no_token_by_default(api: TestClient) -> None:
    answer = api.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "# TYPE fabbrica_jobs gauge" in answer.text
    assert "# TYPE fabbrica_job_wait_seconds histogram" in answer.text


def test_a_metrics_token_is_wanted_when_set(ctx: AppContext, admin: dict[str, str]) -> None:
    guarded = dataclasses.replace(ctx, metrics_token="scrape-secret")
    with TestClient(create_app(guarded), raise_server_exceptions=False) as client:
        for headers in ({}, admin, bearer("scrape-secreT"), {"Authorization": "scrape-secret"}):
            refused = client.get("/metrics", headers=headers)
            assert refused.status_code == 401, headers
            assert refused.json()["error"]["code"] == "unauthenticated"
            assert refused.json()["error"]["field"] == "token"
            assert refused.headers["www-authenticate"] == "Bearer"
        answer = client.get("/metrics", headers=bearer("scrape-secret"))
        assert answer.status_code == 200 and "fabbrica_jobs" in answer.text


def test_request_latency_is_labelled_by_route_template(
    api: TestClient, admin: dict[str, str]
) -> None:
    assert api.get("/api/v1/jobs/987654", headers=admin).status_code == 404
    assert api.get("/api/v1/health").status_code == 200
    assert api.get("/no/such/page/555").status_code == 404
    api.request("BREW", "/api/v1/health")
    text = api.get("/metrics").text
    found = samples(text)
    count = "fabbrica_http_request_duration_seconds_count"

    def requests(method: str, route: str, status: str) -> float | None:
        labels = frozenset({"method": method, "route": route, "status": status}.items())
        return found.get((count, labels))

    assert requests("GET", "/api/v1/jobs/{job_id}", "404") == 1
    assert requests("GET", "/api/v1/health", "200") == 1
    assert requests("GET", "unmatched", "404") == 1
    assert requests("other", "/api/v1/health", "405") == 1
    assert "987654" not in text and "/no/such" not in text and "BREW" not in text


def test_each_app_counts_its_own_requests(ctx: AppContext) -> None:
    with TestClient(create_app(ctx)) as one, TestClient(create_app(ctx)) as two:
        for _ in range(3):
            one.get("/api/v1/health")
        two.get("/api/v1/health")
        key = (
            "fabbrica_http_request_duration_seconds_count",
            frozenset({"method": "GET", "route": "/api/v1/health", "status": "200"}.items()),
        )
        assert samples(one.get("/metrics").text)[key] == 3
        assert samples(two.get("/metrics").text)[key] == 1


def test_promtool_finds_no_problem_in_the_output(ctx: AppContext, api: TestClient) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        need_service("promtool (Debian's prometheus package) is not installed")
    with ctx.db.session() as session:
        seed(session)
    api.get("/api/v1/health")
    text = api.get("/metrics").text
    assert 'fabbrica_gpus{factory="it4lia",gpu_model="H100"} 24.0' in text  # every family fed
    checked = subprocess.run(
        [str(promtool), "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == "" and checked.stderr.strip() == ""
