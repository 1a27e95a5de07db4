from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from fabbrica.api.deps import CurrentUser, SessionDep
from fabbrica.services import reports

router = APIRouter(tags=["reports"])


@router.get("/reports/access")
def access_report(session: SessionDep, actor: CurrentUser) -> dict[str, Any]:
    """Proposals by mode, state, country, organisation type and sector; median decision
    time per mode (operators and federation admins)."""
    return reports.access_report(session, actor)
