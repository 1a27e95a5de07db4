"""The audit log: who did what to which object, when and why."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from fabbrica.store.models import AuditEntry, User


def record(
    session: Session,
    *,
    actor: User | None,
    entity: str,
    entity_id: object,
    action: str,
    now: dt.datetime,
    reason: str | None = None,
    **detail: Any,
) -> AuditEntry:
    entry = AuditEntry(
        at=now,
        actor_id=actor.id if actor is not None else None,
        entity=entity,
        entity_id=str(entity_id),
        action=action,
        detail=json.dumps(detail, default=str, sort_keys=True),
        reason=reason,
    )
    session.add(entry)
    return entry


def history(session: Session, entity: str, entity_id: object) -> list[AuditEntry]:
    query = (
        select(AuditEntry)
        .where(AuditEntry.entity == entity, AuditEntry.entity_id == str(entity_id))
        .order_by(AuditEntry.id)
    )
    return list(session.scalars(query))
