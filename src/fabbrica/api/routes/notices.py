from __future__ import annotations

from fastapi import APIRouter, Query

from fabbrica.api.deps import CurrentUser, SessionDep
from fabbrica.api.present import notice_public
from fabbrica.api.schemas_access import NoticePublic
from fabbrica.services import alerts

router = APIRouter(tags=["allocations"])


@router.get("/notices", response_model=list[NoticePublic])
def list_notices(
    session: SessionDep,
    actor: CurrentUser,
    limit: int = Query(default=50, ge=1, le=500),
) -> list[NoticePublic]:
    """Budget alerts of the allocations of the projects you are the PI or a member of,
    newest first: GPU-hours used past 75, 90 and 100 %, 14 and 3 days left."""
    return [notice_public(a) for a in alerts.notices(session, actor, limit=limit)]
