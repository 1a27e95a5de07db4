"""Reports for operators and the federation office."""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from fabbrica.services.access.visibility import in_operated, require_staff
from fabbrica.store.models import Call, Organisation, Project, Proposal, User


def access_report(session: Session, actor: User) -> dict[str, Any]:
    """Proposals by mode, state, country, organisation type and sector (drafts left out),
    and the median time from submission to decision per mode. An operator's report counts
    the proposals to their factories' calls; an admin's the whole federation."""
    require_staff(actor, "read federation reports")
    rows = session.execute(
        select(Proposal, Call.mode, Organisation.country, Organisation.type, Organisation.sector)
        .join(Call, Call.id == Proposal.call_id)
        .join(Project, Project.pk == Proposal.project_pk)
        .join(Organisation, Organisation.id == Project.organisation_id)
        .where(Proposal.submitted_at.is_not(None), in_operated(actor, Call.factory_id))
    ).all()
    waits: dict[str, list[float]] = {}
    for proposal, mode, *_ in rows:
        if proposal.decided_at is not None and proposal.submitted_at is not None:
            seconds = (proposal.decided_at - proposal.submitted_at).total_seconds()
            waits.setdefault(mode, []).append(seconds)

    def count(index: int) -> dict[str, int]:
        return dict(sorted(Counter(str(row[index] or "none") for row in rows).items()))

    return {
        "proposals": len(rows),
        "by_mode": count(1),
        "by_state": dict(sorted(Counter(row[0].state for row in rows).items())),
        "by_country": count(2),
        "by_organisation_type": count(3),
        "by_sector": count(4),
        "decision_time": {
            mode: {
                "decided": len(values),
                "median_seconds": statistics.median(values),
            }
            for mode, values in sorted(waits.items())
        },
    }
