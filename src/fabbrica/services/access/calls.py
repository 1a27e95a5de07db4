"""Calls: an access mode offered at a factory, opened, closed and tuned by operators."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fabbrica.catalog.model import AccessMode, Catalog, Decision, Factory
from fabbrica.core.access import MAX_GPU_HOURS, AllocationState, CallState, Intake
from fabbrica.core.billing import gpu_hours_problem
from fabbrica.core.errors import InvalidInput, NotFound
from fabbrica.core.identity import Role
from fabbrica.core.text import clean_text
from fabbrica.services.access import audit
from fabbrica.services.access.visibility import require_operator_of
from fabbrica.store.models import Allocation, Call, CallReviewer, User

HOURS_PER_MONTH = 720
# Share of a factory's monthly GPU-hours offered to an automatically decided mode at once:
# defaults an operator changes per call (fabbrica call set ... --offered-gpu-hours).
AUTO_SHARE = {"playground": 0.01, "fast_lane": 0.05}
AUTO_SHARE_DEFAULT = 0.02


def operating_gpu_models(factory: Factory) -> set[str]:
    return {p.gpu_model for p in factory.operating_partitions()}


def operating_gpus(factory: Factory) -> int:
    return sum(p.gpus for p in factory.operating_partitions())


def call_id_for(factory_id: str, mode_id: str) -> str:
    return f"{factory_id}-{mode_id.replace('_', '-')}"


def seed_calls(session: Session, catalog: Catalog, now: dt.datetime) -> int:
    """One call per access mode at every factory with operating GPUs; idempotent.

    Modes with yearly-style cut-offs and no continuous intake among the legacy modes start
    closed; an operator opens them."""
    existing = set(session.scalars(select(Call.id)))
    made = 0
    for factory in catalog.factories:
        gpus = operating_gpus(factory)
        if gpus == 0:
            continue
        for mode in catalog.access_modes:
            call_id = call_id_for(factory.id, mode.id)
            if call_id in existing:
                continue
            session.add(_new_call(call_id, factory, mode, gpus, now))
            made += 1
    return made


def _new_call(
    call_id: str, factory: Factory, mode: AccessMode, gpus: int, now: dt.datetime
) -> Call:
    automatic = mode.decision is Decision.AUTOMATIC
    starts_closed = mode.legacy and mode.intake is Intake.CUTOFFS
    offered = None
    if automatic:
        # An emulated factory (this machine) offers all it has: it exists to try things.
        share = 1.0 if factory.emulated else AUTO_SHARE.get(mode.id, AUTO_SHARE_DEFAULT)
        offered = round(gpus * HOURS_PER_MONTH * share)
    return Call(
        id=call_id,
        mode=mode.id,
        factory_id=factory.id,
        state=CallState.CLOSED if starts_closed else CallState.OPEN,
        decision=mode.decision.value,
        offered_gpu_hours=offered,
        min_reviews=mode.min_reviews,
        min_average_score=mode.min_average_score,
        closed_reason="opened by an operator at a cut-off" if starts_closed else None,
        created_at=now,
    )


def list_calls(
    session: Session,
    *,
    state: str | None = CallState.OPEN,
    factory: str | None = None,
    mode: str | None = None,
) -> list[Call]:
    query = select(Call).order_by(Call.factory_id, Call.mode)
    if state is not None:
        query = query.where(Call.state == state)
    if factory is not None:
        query = query.where(Call.factory_id == factory)
    if mode is not None:
        query = query.where(Call.mode == mode)
    return list(session.scalars(query))


def get_call(session: Session, call_id: str, field: str = "call_id") -> Call:
    call = session.get(Call, call_id)
    if call is None:
        raise NotFound(f"no call {call_id!r} (see `fabbrica calls`)", field=field)
    return call


@dataclass(frozen=True)
class CallChanges:
    state: CallState | None = None
    decision: Decision | None = None
    offered_gpu_hours: float | None = None
    min_reviews: int | None = None
    min_average_score: float | None = None
    reason: str | None = None


def update_call(
    session: Session, actor: User, call_id: str, changes: CallChanges, *, now: dt.datetime
) -> Call:
    call = get_call(session, call_id)
    require_operator_of(session, actor, call.factory_id, "change a call")
    reason = (
        clean_text(changes.reason, "reason", max_len=500, min_len=0) if changes.reason else None
    )
    before = {
        "state": call.state,
        "decision": call.decision,
        "offered_gpu_hours": call.offered_gpu_hours,
        "min_reviews": call.min_reviews,
        "min_average_score": call.min_average_score,
    }
    if changes.state is not None:
        call.state = changes.state.value
        call.closed_reason = reason if changes.state is CallState.CLOSED else None
    if changes.decision is not None:
        call.decision = changes.decision.value
    if changes.offered_gpu_hours is not None:
        offered = changes.offered_gpu_hours
        problem = gpu_hours_problem(offered, maximum=MAX_GPU_HOURS) if offered else None
        if problem is not None:  # 0 offers nothing: every proposal waits for an operator
            raise InvalidInput(f"offered capacity: {problem}", field="offered_gpu_hours")
        call.offered_gpu_hours = offered
    if changes.min_reviews is not None:
        call.min_reviews = changes.min_reviews
    if changes.min_average_score is not None:
        call.min_average_score = changes.min_average_score
    audit.record(
        session,
        actor=actor,
        entity="call",
        entity_id=call.id,
        action="update",
        now=now,
        reason=changes.reason,
        before=before,
    )
    return call


def committed_gpu_hours(session: Session, call: Call) -> float:
    """GPU-hours granted by this call to allocations that are still live."""
    live = (AllocationState.ACTIVE.value, AllocationState.SUSPENDED.value)
    total = session.scalar(
        select(func.coalesce(func.sum(Allocation.granted_gpu_hours), 0.0)).where(
            Allocation.call_id == call.id, Allocation.state.in_(live)
        )
    )
    return float(total or 0.0)


def add_reviewer(
    session: Session, actor: User, call_id: str, user_id: int, now: dt.datetime
) -> Call:
    call = get_call(session, call_id)
    require_operator_of(session, actor, call.factory_id, "assign reviewers")
    reviewer = session.get(User, user_id)
    if reviewer is None or Role(reviewer.role) is not Role.REVIEWER:
        raise InvalidInput(f"user {user_id} is not a reviewer", field="user_id")
    if session.get(CallReviewer, (call.id, user_id)) is None:
        session.add(CallReviewer(call_id=call.id, user_id=user_id))
        audit.record(
            session,
            actor=actor,
            entity="call",
            entity_id=call.id,
            action="add_reviewer",
            now=now,
            user_id=user_id,
        )
    return call


def reviewers_of(session: Session, call: Call) -> list[int]:
    query = select(CallReviewer.user_id).where(CallReviewer.call_id == call.id)
    return sorted(session.scalars(query))
