from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Path, Query

from fabbrica.api.deps import ContextDep, CurrentUser, SessionDep
from fabbrica.api.params import ID_PATTERN
from fabbrica.api.present import call_public
from fabbrica.api.schemas_access import CallPublic, CallUpdate, UserRef
from fabbrica.services.access import calls

router = APIRouter(tags=["calls"])
CallId = Path(
    min_length=1, max_length=140, pattern=ID_PATTERN, description="e.g. it4lia-playground"
)


@router.get("/calls", response_model=list[CallPublic])
def list_calls(
    session: SessionDep,
    actor: CurrentUser,
    state: Literal["open", "closed", "all"] = "open",
    factory: str | None = Query(default=None, max_length=64),
    mode: str | None = Query(default=None, max_length=64),
) -> list[CallPublic]:
    """Calls (open ones by default), with their rules and committed capacity."""
    found = calls.list_calls(
        session, state=None if state == "all" else state, factory=factory, mode=mode
    )
    return [call_public(session, actor, c) for c in found]


@router.get("/calls/{call_id}", response_model=CallPublic)
def get_call(session: SessionDep, actor: CurrentUser, call_id: str = CallId) -> CallPublic:
    """One call."""
    return call_public(session, actor, calls.get_call(session, call_id))


@router.patch("/calls/{call_id}", response_model=CallPublic)
def update_call(
    body: CallUpdate,
    ctx: ContextDep,
    session: SessionDep,
    actor: CurrentUser,
    call_id: str = CallId,
) -> CallPublic:
    """Operators open or close a call, switch automatic/manual decisions, set capacity."""
    changes = calls.CallChanges(**body.model_dump())
    return call_public(
        session, actor, calls.update_call(session, actor, call_id, changes, now=ctx.clock())
    )


@router.post("/calls/{call_id}/reviewers", response_model=CallPublic)
def add_reviewer(
    body: UserRef,
    ctx: ContextDep,
    session: SessionDep,
    actor: CurrentUser,
    call_id: str = CallId,
) -> CallPublic:
    """Operators add a reviewer to a call's round-robin pool."""
    call = calls.add_reviewer(session, actor, call_id, body.user_id, ctx.clock())
    return call_public(session, actor, call)
