"""`/metrics` for Prometheus, and the request-latency middleware that feeds it.

Each app has its own CollectorRegistry (tests build many apps in one process; the global
registry would mix them): the database collector (services/metrics.py) and the request
latency histogram, labelled by route template (`/api/v1/jobs/{job_id}`), never the raw
path. `/metrics` needs no token unless FABBRICA_METRICS_TOKEN is set; then it wants that
token as `Authorization: Bearer ...`. It is left out of the OpenAPI document: it answers
Prometheus' text format, not the JSON API (docs/observability.md).
"""

from __future__ import annotations

import hmac
import re
import time

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fabbrica.api.deps import ContextDep
from fabbrica.api.errors import error_response
from fabbrica.services.metrics import DatabaseCollector

METRICS_PATH = "/metrics"
UNMATCHED = "unmatched"  # the route label of requests no route answers (404s)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

router = APIRouter(include_in_schema=False)


class RequestLatency:
    """ASGI middleware: each HTTP request's duration, by method, route template and status."""

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500  # an exception before any answer is a server error

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            method = scope.get("method", "")
            self.histogram.labels(
                method=method if method in METHODS else "other",
                route=template(scope.get("route"), scope.get("path", "")),
                status=str(status),
            ).observe(time.perf_counter() - began)


def template(route: BaseRoute | None, path: str) -> str:
    """The template of the route that answered `path` (`/api/v1/jobs/{job_id}`), with the
    prefix of the router it was included under; UNMATCHED when no route answered."""
    own = getattr(route, "path", None)
    regex = getattr(route, "path_regex", None)
    if not isinstance(own, str) or not isinstance(regex, re.Pattern):
        return UNMATCHED
    for at, char in enumerate(path):  # the route's own template matches the path's tail
        if char == "/" and regex.match(path[at:]):
            return path[:at] + own
    return own


def install_metrics(app: FastAPI) -> CollectorRegistry:
    """Give `app` its registry, the latency middleware and `/metrics` (call once, before
    the app starts)."""
    # no `_created` gauge beside each histogram (a setting of the process, not the registry)
    disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry(auto_describe=False)
    latency = Histogram(
        "fabbrica_http_request_duration_seconds",
        "HTTP requests by method, route template and status, and how long they took.",
        ["method", "route", "status"],
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    ctx = app.state.ctx
    registry.register(DatabaseCollector(ctx.db, ctx.clock, max_age=ctx.metrics_cache_seconds))
    app.state.metrics_registry = registry
    app.add_middleware(RequestLatency, histogram=latency)
    app.include_router(router)
    return registry


@router.get(METRICS_PATH)
def metrics(request: Request, ctx: ContextDep) -> Response:
    """The federation's metrics in Prometheus' text format."""
    if ctx.metrics_token and not _bearer_matches(request, ctx.metrics_token):
        return error_response(
            401, "unauthenticated", "this scrape needs the metrics token (Bearer)", "token"
        )
    registry: CollectorRegistry = request.app.state.metrics_registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_PLAIN_0_0_4)


def _bearer_matches(request: Request, token: str) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )
