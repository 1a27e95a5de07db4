"""Who calls the MLflow API: a `Tracker` for the project the tracking URI names."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from fabbrica.api.deps import ContextDep, SessionDep
from fabbrica.core.errors import InvalidInput, Unauthenticated
from fabbrica.services import tracking

_bearer = HTTPBearer(auto_error=False)


def get_tracker(
    request: Request,
    ctx: ContextDep,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> tracking.Tracker:
    if credentials is None or not credentials.credentials:
        raise Unauthenticated("missing bearer token (set MLFLOW_TRACKING_TOKEN)")
    project = str(request.path_params.get("project", ""))
    return tracking.tracker(session, credentials.credentials, project, ctx.clock())


TrackerDep = Annotated[tracking.Tracker, Depends(get_tracker)]


def body_text(body: dict[str, Any], key: str, *, required: bool = True) -> str:
    value = body.get(key)
    if value is None or value == "":
        if required:
            raise InvalidInput("missing", key)
        return ""
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise InvalidInput("a string", key)
    return str(value)


def body_int(body: dict[str, Any], key: str, default: int | None = None) -> int | None:
    value = body.get(key)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidInput("a whole number", key) from None


def body_pairs(body: dict[str, Any], key: str) -> list[tuple[str, str]]:
    items = body.get(key) or []
    if not isinstance(items, list):
        raise InvalidInput("a list of {key, value}", key)
    out = []
    for item in items:
        if not isinstance(item, dict):
            raise InvalidInput("a list of {key, value}", key)
        out.append((body_text(item, "key"), body_text(item, "value", required=False)))
    return out
