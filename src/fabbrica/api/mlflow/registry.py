"""MLflow's model registry: /api/2.0/mlflow/registered-models/..., /model-versions/...
(versions and aliases; the deprecated stages are not served)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query

from fabbrica.api.deps import ContextDep, SessionDep
from fabbrica.api.mlflow import present
from fabbrica.api.mlflow.deps import TrackerDep, body_text
from fabbrica.core.errors import InvalidInput
from fabbrica.services import models

router = APIRouter()
JsonBody = Annotated[dict[str, Any], Body(default_factory=dict)]
_NAME_CLAUSE = re.compile(r"""^name\s*(=|i?like)\s*(['"])(?P<name>[^'"]*)\2$""", re.IGNORECASE)
# what the client adds to every search (Fabbrica's registry holds no prompts)
_NOT_PROMPT = re.compile(r"""^tags?\.`?mlflow\.prompt\.is_prompt`?\s*!=\s*'true'$""")


def name_filter(filter_text: str | None) -> str | None:
    """The name pattern a search filter asks for (SQL LIKE: `name = 'x'`, `name LIKE
    'x%'`); None for every name. Other filters are refused rather than ignored."""
    pattern = None
    for clause in re.split(r"\s+and\s+", (filter_text or "").strip(), flags=re.IGNORECASE):
        if not clause or _NOT_PROMPT.match(clause):
            continue
        match = _NAME_CLAUSE.match(clause)
        if match is None or pattern is not None:
            raise InvalidInput(
                "Fabbrica's registry searches by name = '...' or name LIKE '...' only", "filter"
            )
        exact = match.group(1) == "="
        name = match.group("name")
        pattern = name.replace("%", "\\%").replace("_", "\\_") if exact else name
    return pattern


def _version(value: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 2**31:
        raise InvalidInput("a version is a number from 1", "version")
    return int(value)


@router.post("/registered-models/create")
def create_model(
    who: TrackerDep, session: SessionDep, ctx: ContextDep, body: JsonBody
) -> dict[str, Any]:
    made = models.create_model(
        session,
        who.project,
        body_text(body, "name"),
        ctx.clock(),
        body_text(body, "description", required=False),
    )
    return {"registered_model": present.registered_model(session, made)}


@router.get("/registered-models/get")
def get_model(
    who: TrackerDep, session: SessionDep, name: Annotated[str, Query()]
) -> dict[str, Any]:
    found = models.get_model(session, who.project, name)
    return {"registered_model": present.registered_model(session, found)}


@router.get("/registered-models/search")
def search_models(
    who: TrackerDep,
    session: SessionDep,
    filter: Annotated[str | None, Query()] = None,
    max_results: Annotated[int, Query(ge=1, le=50_000)] = 1000,
) -> dict[str, Any]:
    found = models.search_models(session, who.project, name_filter(filter), max_results)
    return {"registered_models": [present.registered_model(session, m) for m in found]}


@router.post("/registered-models/get-latest-versions")
def latest_versions(who: TrackerDep, session: SessionDep, body: JsonBody) -> dict[str, Any]:
    model = models.get_model(session, who.project, body_text(body, "name"))
    latest = models.versions(session, who.project, model.name, limit=1)
    return {"model_versions": [present.model_version(session, v, model) for v in latest]}


@router.post("/registered-models/alias")
def set_alias(who: TrackerDep, session: SessionDep, body: JsonBody) -> dict[str, Any]:
    version = _version(body_text(body, "version"))
    models.set_alias(
        session, who.project, body_text(body, "name"), body_text(body, "alias"), version
    )
    return {}


@router.delete("/registered-models/alias")
def delete_alias(
    who: TrackerDep,
    session: SessionDep,
    body: JsonBody,
    name: Annotated[str | None, Query()] = None,
    alias: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    said = {"name": name, "alias": alias, **body}
    models.delete_alias(session, who.project, body_text(said, "name"), body_text(said, "alias"))
    return {}


@router.get("/registered-models/alias")
def get_by_alias(
    who: TrackerDep,
    session: SessionDep,
    name: Annotated[str, Query()],
    alias: Annotated[str, Query()],
) -> dict[str, Any]:
    found = models.by_alias(session, who.project, name, alias)
    return {"model_version": present.model_version(session, found)}


@router.post("/model-versions/create")
def create_version(
    who: TrackerDep, session: SessionDep, ctx: ContextDep, body: JsonBody
) -> dict[str, Any]:
    made = models.register_version(
        session,
        who.project,
        who.user,
        body_text(body, "name"),
        source=body_text(body, "source", required=False),
        run_id=body_text(body, "run_id", required=False) or None,
        job_id=who.job_id if not body.get("run_id") else None,
        description=body_text(body, "description", required=False),
        now=ctx.clock(),
    )
    return {"model_version": present.model_version(session, made)}


@router.get("/model-versions/get")
def get_version(
    who: TrackerDep,
    session: SessionDep,
    name: Annotated[str, Query()],
    version: Annotated[str, Query()],
) -> dict[str, Any]:
    found = models.get_version(session, who.project, name, _version(version))
    return {"model_version": present.model_version(session, found)}


@router.get("/model-versions/search")
def search_versions(
    who: TrackerDep,
    session: SessionDep,
    filter: Annotated[str | None, Query()] = None,
    max_results: Annotated[int, Query(ge=1, le=200_000)] = 10_000,
) -> dict[str, Any]:
    found = models.versions(session, who.project, limit=max_results, pattern=name_filter(filter))
    return {"model_versions": [present.model_version(session, v) for v in found]}
