"""One scheduling pass: priority order, federated placement, EASY backfill, reasons.

For each job, highest priority first:
1. its candidate partitions: allowed factory and country, GPU model, size, and a valid
   allocation of its project there with enough GPU-hours for its worst case;
2. among those that can start it now (without delaying the reservation), the best: home
   country first, then the least loaded, then the id;
3. if none can, it holds a reservation at its earliest estimated start on a partition no
   higher-priority job holds (EASY backfill per partition, as every site's Slurm does: a
   later job may start there first only if it cannot delay that start); with
   `Policy(reservations="federation")` only the first such job holds one, for the whole
   pass. With backfill off, its partitions are closed to every later job (strict FIFO).
Every job left waiting gets a reason a person can read, unless the policy says not to
explain (the simulator): then a job that cannot fit in any free GPUs is passed over as soon
as it can no longer change the pass (it cannot take a reservation, or every partition is
closed).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

from fabbrica.sched.capacity import PartitionState, charge
from fabbrica.sched.model import (
    Allocation,
    Assignment,
    Decision,
    Job,
    Partition,
    Reservation,
    Seconds,
    Snapshot,
    Waiting,
)
from fabbrica.sched.priority import fairshare_factors, order
from fabbrica.sched.reasons import after, no_candidate_reason, residency_note


@dataclass
class _Held:
    """The reservation and how many GPUs beyond it are free at its start."""

    reservation: Reservation
    state: PartitionState
    extra: int


@dataclass(frozen=True, slots=True)
class _Candidate:
    state: PartitionState
    allocation: Allocation
    charge: float


class _Pass:
    def __init__(self, snapshot: Snapshot) -> None:
        self.now = snapshot.now
        self.snapshot = snapshot
        self.states = [PartitionState.of(p) for p in snapshot.partitions]
        self.by_factory: dict[str, list[PartitionState]] = defaultdict(list)
        for state in self.states:
            self.by_factory[state.partition.factory].append(state)
        self.left: dict[int, float] = {a.id: a.remaining_gpu_hours for a in snapshot.allocations}
        self.allocations: dict[tuple[str, str], list[Allocation]] = defaultdict(list)
        for allocation in snapshot.allocations:
            self.allocations[(allocation.project, allocation.factory)].append(allocation)
        self.per_partition = snapshot.policy.reservations != "federation"
        self.held: dict[tuple[str, str], _Held] = {}  # partition key -> its reservation
        self.reserved: list[Reservation] = []  # in priority order
        # partitions a job of a given shape fits (what fits does not change in a pass)
        self.fitting: dict[tuple[object, ...], list[PartitionState]] = {}
        self.explain = snapshot.policy.explain
        self.max_free = 0  # most free GPUs of any partition without a reservation
        self._update_free()
        self.closed: set[tuple[str, str]] = set()  # strict FIFO: partitions behind a blocked job
        self.assignments: list[Assignment] = []
        self.waiting: list[Waiting] = []

    def run(self) -> Decision:
        snapshot = self.snapshot
        factors = fairshare_factors(
            {j.project for j in snapshot.jobs}, snapshot.shares, snapshot.usage
        )
        ranked = order(snapshot.jobs, self.now, factors, snapshot.policy)
        backfill = snapshot.policy.backfill
        for job in ranked:
            if not self.explain:
                if backfill and self._no_reservation_left() and not self._might_start(job):
                    continue  # it would only wait, and no reservation is left to take
                if not backfill and len(self.closed) == len(self.states):
                    break  # strict FIFO: every partition is behind a blocked job
            self._place(job)
        return Decision(
            assignments=tuple(self.assignments),
            waiting=tuple(self.waiting),
            reservation=self.reserved[0] if self.reserved else None,
            order=tuple([j.id for j in ranked]),
            reservations=tuple(self.reserved),
        )

    def _no_reservation_left(self) -> bool:
        if self.per_partition:
            return len(self.held) == len(self.states)
        return bool(self.held)

    # --- one job -----------------------------------------------------------------------

    def _place(self, job: Job) -> None:
        fitting = self._partitions_for(job)
        if not fitting:
            if self.explain:
                self._wait(job, no_candidate_reason(job, self.snapshot.partitions))
            return
        candidates = self._with_allocation(job, fitting)
        if not candidates:
            if self.explain:
                note = residency_note(job, {s.partition.factory for s in fitting})
                self._wait(job, self._allocation_reason(job, fitting) + note)
            return
        startable = [c for c in candidates if self._may_start_now(job, c.state)]
        if startable:
            self._start(job, min(startable, key=lambda c: self._rank(job, c)))
            return
        self._block(job, candidates)

    def _partitions_for(self, job: Job) -> list[PartitionState]:
        shape = (job.gpus, job.nodes, job.gpu_model, job.factories, job.countries)
        found = self.fitting.get(shape)
        if found is None:
            factories = job.factories if job.factories is not None else self.by_factory.keys()
            found = [
                state
                for factory in factories
                for state in self.by_factory.get(factory, ())
                if fits(job, state.partition)
            ]
            self.fitting[shape] = found
        return found

    def _with_allocation(self, job: Job, states: list[PartitionState]) -> list[_Candidate]:
        found = []
        for state in states:
            partition = state.partition
            cost = charge(partition, job)
            for allocation in self.allocations.get((job.project, partition.factory), ()):
                model_ok = allocation.gpu_model in (None, partition.gpu_model)
                if model_ok and self.left[allocation.id] + 1e-9 >= cost:
                    found.append(_Candidate(state, allocation, cost))
                    break
        return found

    def _update_free(self) -> None:
        held = self.held
        self.max_free = max((s.free for s in self.states if s.partition.key not in held), default=0)

    def _might_start(self, job: Job) -> bool:
        """A quick necessary condition for `_may_start_now` on some partition."""
        if job.gpus <= self.max_free:
            return True
        end = self.now + job.time_limit
        return any(
            job.gpus <= h.state.free and (end <= h.reservation.start or job.gpus <= h.extra)
            for h in self.held.values()
        )

    def _may_start_now(self, job: Job, state: PartitionState) -> bool:
        if job.gpus > state.free or state.partition.key in self.closed:
            return False
        held = self.held.get(state.partition.key)
        if held is None:
            return True
        return self.now + job.time_limit <= held.reservation.start or job.gpus <= held.extra

    def _rank(self, job: Job, c: _Candidate) -> tuple[int, float, str, str]:
        partition = c.state.partition
        away = 0 if job.home_country and partition.country == job.home_country else 1
        return (away, c.state.load, partition.factory, partition.id)

    def _start(self, job: Job, c: _Candidate) -> None:
        state, end = c.state, self.now + job.time_limit
        held = self.held.get(state.partition.key)
        backfilled = bool(self.held)
        if held is not None and end > held.reservation.start:
            held.extra -= job.gpus
        state.start(job.gpus, end)
        self._update_free()
        self.left[c.allocation.id] -= c.charge
        partition = state.partition
        self.assignments.append(
            Assignment(
                job=job.id,
                factory=partition.factory,
                partition=partition.id,
                allocation=c.allocation.id,
                charge_gpu_hours=c.charge,
                start=self.now,
                backfilled=backfilled,
            )
        )

    def _block(self, job: Job, candidates: list[_Candidate]) -> None:
        backfill = self.snapshot.policy.backfill
        if backfill and self.held and not self.per_partition:
            candidates_to_hold: list[_Candidate] = []
        else:
            candidates_to_hold = [c for c in candidates if c.state.partition.key not in self.held]
        if not self.explain and backfill and not candidates_to_hold:
            return  # it would only wait: nothing to estimate
        reserve = self._earliest(job, candidates_to_hold) if backfill else None
        if not self.explain and reserve is None and backfill:
            return
        found = self._earliest(job, candidates)
        if found is None:
            if self.explain:
                note = residency_note(job, {c.state.partition.factory for c in candidates})
                self._wait(job, f"{job.gpus} GPUs never free up on its allowed partitions{note}")
            return
        start, best = found
        partition = best.state.partition
        note = residency_note(job, {c.state.partition.factory for c in candidates})
        if not backfill:
            self.closed.update(c.state.partition.key for c in candidates)
        elif reserve is not None:
            start, best = reserve
            partition = best.state.partition
            reservation = Reservation(job.id, partition.factory, partition.id, start, job.gpus)
            extra = best.state.free_at(start) - job.gpus
            self.held[partition.key] = _Held(reservation, best.state, extra)
            self.reserved.append(reservation)
            self._update_free()
            if not self.explain:
                return
            self._wait(
                job,
                f"no allowed factory has {job.gpus} free {_model(job)}GPUs now; reserved: "
                f"earliest estimated start {after(start - self.now)} at {partition.factory}"
                f"{note}",
                start,
                partition.factory,
            )
            return
        if not self.explain:
            return
        self._wait(
            job,
            f"no allowed factory has {job.gpus} free {_model(job)}GPUs now (or they are "
            f"held for a higher-priority job); earliest estimated start "
            f"{after(start - self.now)} at {partition.factory}{note}",
            start,
            partition.factory,
        )

    def _earliest(
        self, job: Job, candidates: list[_Candidate]
    ) -> tuple[Seconds, _Candidate] | None:
        """The candidate where the job could start first (if running work ends on time)."""
        starts = [(c.state.earliest(job.gpus, self.now), c) for c in candidates]
        known = [(t, c) for t, c in starts if t is not None]
        if not known:
            return None
        return min(known, key=lambda tc: (tc[0], self._rank(job, tc[1])))

    def _allocation_reason(self, job: Job, states: list[PartitionState]) -> str:
        best: tuple[float, float, str] | None = None
        for state in states:
            cost = charge(state.partition, job)
            for allocation in self.allocations.get((job.project, state.partition.factory), ()):
                left = self.left[allocation.id]
                if best is None or left > best[0]:
                    best = (left, cost, allocation.factory)
        if best is None:
            factories = ", ".join(sorted({s.partition.factory for s in states}))
            return f"project {job.project} holds no valid allocation at {factories}"
        left, cost, factory = best
        return (
            f"allocation on {factory} has {max(left, 0):,.1f} GPU-hours left, job needs {cost:,.1f}"
        )

    def _wait(
        self,
        job: Job,
        reason: str,
        start: Seconds | None = None,
        factory: str | None = None,
    ) -> None:
        self.waiting.append(Waiting(job.id, reason, start, factory))


def fits(job: Job, partition: Partition) -> bool:
    if job.countries is not None and partition.country not in job.countries:
        return False
    if job.gpu_model is not None and partition.gpu_model != job.gpu_model:
        return False
    if job.nodes > 1 and not partition.multi_node:
        return False
    per_node = math.ceil(job.gpus / job.nodes)
    return per_node <= partition.gpus_per_node and job.gpus <= partition.total_gpus


def _model(job: Job) -> str:
    return f"{job.gpu_model} " if job.gpu_model else ""


def schedule(snapshot: Snapshot) -> Decision:
    """Run one pass over the snapshot; the snapshot is not changed."""
    return _Pass(snapshot).run()
