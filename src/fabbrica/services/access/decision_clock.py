"""A proposal's clock: the working days its decision has taken, or has been waiting,
against its access mode's target (Playground 2, Fast Lane 4, Large Scale 10 after the
cut-off ...), counted as the federation report counts them."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from fabbrica.catalog.model import Catalog
from fabbrica.core.access import Intake, ProposalState, next_cutoff
from fabbrica.services.federation_report import decision_working_days
from fabbrica.store.models import Proposal


@dataclass(frozen=True)
class DecisionClock:
    working_days: int  # to the decision, or so far
    target: int | None  # the mode's target in working days (None: the mode sets none)
    decided: bool
    counted_from: dt.date  # the submission's date, or the cut-off after it for cut-off modes

    @property
    def started(self) -> bool:
        return self.working_days > 0 or self.decided

    @property
    def late(self) -> bool:
        return self.target is not None and self.working_days > self.target

    @property
    def left(self) -> int | None:
        """Working days left before the target (negative: past it); None without one."""
        return None if self.target is None else self.target - self.working_days


def decision_clock(catalog: Catalog, proposal: Proposal, now: dt.datetime) -> DecisionClock | None:
    """None for a proposal not submitted (a draft has no clock) or withdrawn."""
    if proposal.submitted_at is None or proposal.state == ProposalState.WITHDRAWN:
        return None
    call = proposal.call
    end = proposal.decided_at or now
    days = decision_working_days(catalog, call.mode, call.factory_id, proposal.submitted_at, end)
    mode = catalog.access_mode(call.mode)
    target = mode.decision_target_working_days if mode else None
    counted_from = proposal.submitted_at.astimezone(dt.UTC).date()
    if mode is not None and mode.intake is Intake.CUTOFFS:
        counted_from = next_cutoff(mode, counted_from) or counted_from
    return DecisionClock(days, target, proposal.decided_at is not None, counted_from)
