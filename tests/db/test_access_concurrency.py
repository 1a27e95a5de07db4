"""One live Playground allocation per project, under concurrent applications, on both
databases: of eight applications of one project sent at once, one is accepted and seven
are refused naming it (the call row is locked before the check)."""

from __future__ import annotations

import threading

from sqlalchemy import func, select

from fabbrica.api.deps import AppContext
from fabbrica.core.errors import Conflict
from fabbrica.services.access import proposals
from fabbrica.store.models import Allocation, Proposal
from tests.db.test_access_services import load_user, new_applicant

ATTEMPTS = 8


def test_concurrent_applications_of_one_project_give_one_live_allocation(
    ctx: AppContext,
) -> None:
    applicant = new_applicant(ctx, "ceo@racing.it")
    barrier = threading.Barrier(ATTEMPTS)
    outcomes: list[str] = []
    lock = threading.Lock()

    def attempt() -> None:
        application = proposals.Application(
            project_id=applicant.project_id,
            call_id="it4lia-playground",
            gpu_hours=100,
            months=1,
            declare_civilian_ai_act=True,
        )
        barrier.wait()
        try:
            with ctx.db.session() as s:
                pi = load_user(s, applicant.pi_id)
                made = proposals.apply(s, pi, ctx.catalog, application, now=ctx.clock())
                outcome = made.state
        except Conflict as exc:
            assert exc.field == "call_id"
            outcome = "refused: " + exc.message
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=attempt) for _ in range(ATTEMPTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(outcomes) == ATTEMPTS
    assert outcomes.count("accepted") == 1, outcomes
    with ctx.db.session() as s:
        allocation = s.scalar(select(Allocation.id))
        assert s.scalar(select(func.count()).select_from(Allocation)) == 1
        assert s.scalar(select(func.count()).select_from(Proposal)) == 1  # refused: not kept
    refused = [o for o in outcomes if o != "accepted"]
    assert all(f"allocation {allocation}" in o for o in refused), refused


def test_concurrent_applications_of_many_projects_to_one_call_all_succeed(
    ctx: AppContext,
) -> None:
    """The call lock does not deadlock applicants (each proposal row holds a key-share lock
    on its call): eight projects applying at once are each accepted."""
    applicants = [new_applicant(ctx, f"ceo@team{i}.it") for i in range(ATTEMPTS)]
    barrier = threading.Barrier(ATTEMPTS)
    outcomes: list[str] = []
    lock = threading.Lock()

    def attempt(index: int) -> None:
        applicant = applicants[index]
        application = proposals.Application(
            project_id=applicant.project_id,
            call_id="it4lia-playground",
            gpu_hours=100,
            months=1,
            declare_civilian_ai_act=True,
        )
        barrier.wait()
        try:
            with ctx.db.session() as s:
                pi = load_user(s, applicant.pi_id)
                outcome = proposals.apply(s, pi, ctx.catalog, application, now=ctx.clock()).state
        except Exception as exc:
            outcome = f"{type(exc).__name__}: {exc}"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(ATTEMPTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert outcomes == ["accepted"] * ATTEMPTS
    with ctx.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Allocation)) == ATTEMPTS
