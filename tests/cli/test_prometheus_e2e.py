"""A real Prometheus scrapes a real `fabbrica up` while jobs flow, and its HTTP API answers
the numbers the Fabbrica API holds; every query of the Grafana dashboard is valid PromQL."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.test_grafana_dashboard import DASHBOARD, exprs
from tests.cli.server import Server, free_port
from tests.cli.test_jobs_e2e import startup
from tests.conftest import need_service

pytestmark = pytest.mark.slow
SCRAPE_TOKEN = "scrape-token-for-prometheus"
PATIENCE = 60.0  # seconds for a scraped number to catch up (scrapes every second)


class Prometheus:
    """Debian's prometheus, scraping one target every second, in a directory of its own."""

    def __init__(self, home: Path, target: str) -> None:
        self.home, self.target = home, target
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, binary: str) -> Prometheus:
        config = self.home / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: fabbrica\n"
            "    metrics_path: /metrics\n"
            f"    authorization: {{type: Bearer, credentials: {SCRAPE_TOKEN}}}\n"
            f"    static_configs: [{{targets: ['{self.target}']}}]\n"
        )
        for _ in range(3):  # another test may take the free port first
            port = free_port()
            self.url = f"http://127.0.0.1:{port}"
            with (self.home / "prometheus.log").open("ab") as log:
                self.process = subprocess.Popen(
                    [binary, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}",
                     f"--storage.tsdb.path={self.home / 'data'}", "--log.level=warn"],
                    stdout=log, stderr=subprocess.STDOUT,
                )  # fmt: skip
            began = time.monotonic()
            while time.monotonic() - began < 60 and self.process.poll() is None:
                try:
                    if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            self.stop()
        raise RuntimeError((self.home / "prometheus.log").read_text(errors="replace"))

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = answer.json()
        assert body["status"] == "success", (expr, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def scalar(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None


@pytest.fixture
def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        need_service("prometheus (Debian's prometheus package) is not installed")
    assert found is not None
    return found


@pytest.fixture
def prometheus(
    server: Server, prometheus_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[], Prometheus]]:
    started: list[Prometheus] = []

    def start() -> Prometheus:
        home = tmp_path_factory.mktemp("prometheus")
        started.append(Prometheus(home, f"127.0.0.1:{server.port}").start(prometheus_binary))
        return started[-1]

    yield start
    for one in started:
        one.stop()


def eventually(prom: Prometheus, expr: str, expected: float, what: str) -> None:
    """`expr` comes to answer `expected` (the scrapes catch up with the database)."""
    began, seen = time.monotonic(), None
    while time.monotonic() - began < PATIENCE:
        seen = prom.scalar(expr)
        if seen is not None and seen == pytest.approx(expected, rel=1e-6, abs=1e-6):
            return
        time.sleep(0.5)
    raise AssertionError(f"{what}: Prometheus says {seen}, the API {expected}")


def test_prometheus_scrapes_what_the_database_holds(
    server: Server, prometheus: Callable[[], Prometheus], tmp_path: Path
) -> None:
    server.env["FABBRICA_METRICS_TOKEN"] = SCRAPE_TOKEN
    cli, project = startup(server, gpus=4, hours=50)
    assert httpx.get(f"{server.url}/metrics", timeout=10).status_code == 401  # token wanted
    spec = tmp_path / "job.yaml"
    for run, code in (("echo one", 0), ("echo two", 0), ("exit 3", 1)):  # 1: the job failed
        spec.write_text(f"name: quick\nrun: {run}\nresources: {{time_limit: 5m}}\n")
        cli.run("run", str(spec), "--project", project, "--wait", code=code)
    prom = prometheus()
    listed = cli.run("jobs", "--json")
    by_state: dict[str, int] = {}
    for job in listed:
        by_state[job["state"]] = by_state.get(job["state"], 0) + 1
    assert by_state == {"succeeded": 2, "failed": 1}, by_state
    for state, count in by_state.items():
        eventually(
            prom,
            f'sum(fabbrica_jobs{{state="{state}",factory="local"}})',
            count,
            f"{state} jobs",
        )
    eventually(prom, 'up{job="fabbrica"}', 1, "the scrape (with its token)")
    eventually(
        prom,
        'sum(fabbrica_job_wait_seconds_count{factory="local"})',
        len([j for j in listed if j["started_at"]]),
        "started jobs",
    )
    (allocation,) = cli.run("allocations", "--json")
    mode = {"factory": "local", "mode": "playground", "state": "active"}
    matcher = ",".join(f'{k}="{v}"' for k, v in mode.items())
    for key in ("granted", "used"):
        eventually(
            prom,
            f"sum(fabbrica_allocation_{key}_gpu_seconds{{{matcher}}})",
            allocation["gpu_hours" if key == "granted" else "used_gpu_hours"] * 3600,
            f"{key} GPU-hours",
        )
    eventually(prom, 'sum(fabbrica_proposals{state="accepted"})', 1, "proposals")
    eventually(
        prom,
        'sum(fabbrica_proposal_decision_seconds_count{mode="playground"})',
        1,
        "decisions",
    )
    eventually(prom, 'sum(fabbrica_gpus{factory="local"})', 4, "GPUs")
    eventually(prom, 'sum(fabbrica_gpus_free{factory="local"})', 4, "free GPUs")
    age = prom.scalar('fabbrica_agent_last_sync_age_seconds{factory="local"}')
    assert age is not None and 0 <= age < 30
    # a scrape is answered from the last collection (FABBRICA_METRICS_CACHE_SECONDS, 5 by
    # default), and a newer one is read in the background once it is older than that: the
    # figures served are at most that, one scrape interval (1 s) and a collection old (a
    # few seconds on a busy machine), never the minutes that would mean no refresh at all
    served = prom.scalar("max_over_time(fabbrica_metrics_age_seconds[1m])")
    assert served is not None and 0 <= served <= 5 + 1 + 4, served
    routes = {
        r["metric"]["route"]
        for r in prom.query("count by (route) (fabbrica_http_request_duration_seconds_count)")
    }
    assert "/api/v1/jobs/{job_id}" in routes  # `--wait` polled the job
    assert not [r for r in routes if re.search(r"/[0-9]+(/|$)", r)], routes  # templates only
    _dashboard_queries_are_valid_promql(prom)


def _dashboard_queries_are_valid_promql(prom: Prometheus) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    answered = 0
    for expr in exprs(dashboard):
        query = expr.replace("$__rate_interval", "1m").replace("$factory", "local")
        answered += bool(prom.query(query))  # asserts that Prometheus accepts the query
    assert answered >= 15  # most panels have data once jobs ran
