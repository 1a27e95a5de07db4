"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI

from fabbrica import __version__
from fabbrica.api.deps import AppContext
from fabbrica.api.errors import install_error_handlers
from fabbrica.api.limits import ConcurrencyLimit, RequestLimits
from fabbrica.api.metrics import METRICS_PATH, install_metrics
from fabbrica.api.mlflow import MOUNT, create_mlflow_app
from fabbrica.api.openapi import install_openapi
from fabbrica.api.routes import (
    agent_tunnel,
    agents,
    allocations,
    calls,
    catalog,
    datasets,
    health,
    jobs,
    models,
    notebooks,
    notices,
    organisations,
    projects,
    proposals,
    reports,
    templates,
    tokens,
    users,
)

API_PREFIX = "/api/v1"
SQLITE_CONCURRENCY = 16  # well under the 40 worker threads requests run their sync code in

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


@asynccontextmanager
async def _no_background(_: FastAPI) -> AsyncIterator[None]:
    yield


def create_app(
    ctx: AppContext, lifespan: Lifespan | None = None, *, max_body_bytes: int = 1024 * 1024
) -> FastAPI:
    """Build the API around `ctx`; `lifespan` starts background work (the control loop)."""
    app = FastAPI(
        title="Fabbrica",
        version=__version__,
        summary="The operating layer of a federation of AI Factories.",
        lifespan=lifespan or _no_background,
    )
    app.state.ctx = ctx
    install_error_handlers(app)
    if ctx.db.backend == "sqlite":
        app.add_middleware(
            ConcurrencyLimit,
            limit=SQLITE_CONCURRENCY,
            exempt=frozenset({f"{API_PREFIX}/health", METRICS_PATH}),
        )
    app.add_middleware(
        RequestLimits,
        limit=max_body_bytes,
        upload_limit=ctx.upload_max_bytes,
        upload_paths=frozenset({f"{API_PREFIX}/jobs"}),
        upload_prefixes=(f"{API_PREFIX}{datasets.UPLOADS_PATH}/", "/mlflow/"),
    )
    routers = (health, catalog, users, tokens, organisations, projects, calls, proposals)
    for module in (
        *routers,
        allocations,
        notices,
        reports,
        jobs,
        templates,
        datasets,
        models,
        notebooks,
        agents,
    ):
        app.include_router(module.router, prefix=API_PREFIX)
    app.include_router(agent_tunnel.router)  # its own full path (core.tunnel.PATH)
    app.mount(MOUNT, create_mlflow_app(ctx))  # MLflow's REST API, per project (docs/models.md)
    install_metrics(app)  # after the guards: its latency includes their waits
    install_openapi(app, API_PREFIX)
    return app
