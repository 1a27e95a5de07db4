"""Pages anyone may read: the federation's catalog, a factory, the calls open now."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from fabbrica.catalog.model import Catalog, Factory
from fabbrica.core.errors import NotFound
from fabbrica.portal.web import DbSession, PortalRoute, ViewerDep, context, is_htmx, render
from fabbrica.services.access import calls as calls_service
from fabbrica.store.models import Call

router = APIRouter(route_class=PortalRoute, include_in_schema=False)


def gpu_models(factory: Factory) -> dict[str, int]:
    """GPU model -> GPUs, over the factory's systems."""
    counts: dict[str, int] = defaultdict(int)
    for system in factory.systems:
        for partition in system.partitions:
            counts[partition.gpu_model] += partition.gpus
    return dict(sorted(counts.items()))


def _modes_by_factory(calls: list[Call]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = defaultdict(list)
    for call in calls:
        found[call.factory_id].append(call.mode)
    return found


def _mode_names(catalog: Catalog) -> dict[str, str]:
    return {m.id: m.name for m in catalog.access_modes}


@router.get("/", response_class=HTMLResponse)
def home(
    request: Request,
    who: ViewerDep,
    session: DbSession,
    country: str = Query(default="", max_length=2),
    gpu_model: str = Query(default="", max_length=64),
    mode: str = Query(default="", max_length=64),
) -> HTMLResponse:
    """The catalog of factories (filtered by country, GPU model, access mode) and the
    calls open now."""
    catalog = context(request).catalog
    open_calls = calls_service.list_calls(session)
    modes = _modes_by_factory(open_calls)
    rows = []
    for factory in catalog.factories:
        models = gpu_models(factory)
        if country and factory.country != country.upper():
            continue
        if gpu_model and gpu_model not in models:
            continue
        if mode and mode not in modes.get(factory.id, []):
            continue
        rows.append((factory, models, modes.get(factory.id, [])))
    shown = {factory.id for factory, _, _ in rows}
    calls_by_mode: dict[str, list[Call]] = defaultdict(list)
    for call in open_calls:
        if call.factory_id in shown and (not mode or call.mode == mode):
            calls_by_mode[call.mode].append(call)
    values: dict[str, Any] = dict(
        rows=rows,
        countries=sorted({f.country for f in catalog.factories}),
        models=sorted({m for f in catalog.factories for m in gpu_models(f)}),
        mode_names=_mode_names(catalog),
        chosen={"country": country.upper(), "gpu_model": gpu_model, "mode": mode},
        calls_by_mode=dict(calls_by_mode),
        factory_names={f.id: f.name for f in catalog.factories},
    )
    template = "catalog_rows.html" if is_htmx(request) else "home.html"
    return render(request, who, template, **values)


@router.get("/factories/{factory_id}", response_class=HTMLResponse)
def factory_page(
    request: Request, who: ViewerDep, session: DbSession, factory_id: str
) -> HTMLResponse:
    catalog = context(request).catalog
    factory = next((f for f in catalog.factories if f.id == factory_id), None)
    if factory is None:
        raise NotFound(f"no factory {factory_id}")
    open_calls = calls_service.list_calls(session, factory=factory.id)
    return render(
        request,
        who,
        "factory.html",
        factory=factory,
        models=gpu_models(factory),
        open_calls=open_calls,
        mode_names=_mode_names(catalog),
    )
