"""The Grafana dashboard asks only for metrics that `/metrics` exposes."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from fabbrica.api.deps import AppContext
from tests.conftest import REPO
from tests.db.metrics_seed import seed

DASHBOARD = REPO / "deploy" / "grafana" / "fabbrica-federation.json"
# PromQL words that are not metric names: aggregations' modifiers and binary operators
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
            "or", "unless", "offset", "inf", "nan"}  # fmt: skip
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def exprs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            else:
                yield from exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from exprs(item)


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: its identifiers once strings, label matchers,
    groupings, ranges and function calls are taken out."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or match.group().lower() in KEYWORDS:
            continue  # a function
        if text[: match.start()].endswith("$"):
            continue  # a Grafana variable
        names.add(match.group())
    return names


def exposed(text: str) -> set[str]:
    found = set()
    for family in text_string_to_metric_families(text):
        found.add(family.name)
        found |= {sample.name for sample in family.samples}
        if family.type == "counter":  # its samples are `<name>_total`, with or without rows
            found.add(family.name + "_total")
        if family.type == "histogram":
            found |= {family.name + suffix for suffix in HISTOGRAM_SUFFIXES}
    return found


def test_the_parser_finds_the_metric_names() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, route) (rate(a_seconds_bucket{x="y(z)"}'
        "[$__rate_interval]))) / on (f) group_left b_total or vector(0)"
    )
    assert metric_names(expr) == {"a_seconds_bucket", "b_total"}


def test_every_dashboard_query_uses_exposed_metrics(ctx: AppContext, api: TestClient) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    with ctx.db.session() as session:
        seed(session)
    api.get("/api/v1/health")
    live = exposed(api.get("/metrics").text)
    assert {"fabbrica_jobs", "fabbrica_job_wait_seconds_bucket"} <= live
    queries = list(exprs(dashboard))
    assert len(queries) >= 20
    used: set[str] = set()
    for expr in queries:
        names = metric_names(expr)
        assert names, f"no metric in {expr!r}"
        assert names <= live, f"{expr!r} asks for {sorted(names - live)}, not in /metrics"
        used |= names
    variable = {v["name"]: v for v in dashboard["templating"]["list"]}["factory"]
    query = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["definition"])
    assert query is not None
    metric, label = query.groups()
    assert metric in live and label == "factory"
    rows = [p for p in dashboard["panels"] if p["type"] == "row"]
    assert [r.get("repeat") for r in rows] == [None, "factory"]  # overview, one per factory
    assert {"fabbrica_gpus_free", "fabbrica_proposal_decision_seconds_bucket"} <= used
