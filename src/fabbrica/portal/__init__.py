"""The portal: server-rendered pages (Jinja2, htmx for the live parts) at `/`, served by
the same process and the same services as the REST API."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from fabbrica.portal import (
    allocations,
    apply,
    dashboard,
    federated,
    job_templates,
    jobs,
    notebook_proxy,
    notebooks,
    notices,
    operate,
    projects,
    public,
    review,
    signin,
)
from fabbrica.portal.i18n import LanguageMiddleware

STATIC = Path(__file__).parent / "static"


def install_portal(app: FastAPI) -> None:
    """Add the portal's pages and its static files (CSS, the vendored htmx) to `app`."""
    modules = (public, signin, federated, jobs, projects, apply, allocations, notices, review)
    for module in (*modules, job_templates, operate, dashboard, notebooks, notebook_proxy):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(LanguageMiddleware)
