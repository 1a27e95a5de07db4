"""The scheduling pass as it was before its hot paths were made faster (frozen copy).

tests/unit/test_sched_equivalence.py checks that fabbrica.sched makes exactly the same
decisions as this code on random workloads. Do not edit: it is the reference.
"""

# ruff: noqa
# mypy: ignore-errors

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from operator import attrgetter

from fabbrica.sched.model import (
    Allocation,
    Assignment,
    Decision,
    Job,
    Partition,
    Policy,
    Reservation,
    Seconds,
    Snapshot,
    Waiting,
)
from fabbrica.sched.reasons import after, no_candidate_reason


@dataclass
class PartitionState:
    """Free GPUs and the release times of running work. The release times are sorted only
    when a reservation or an estimate needs them: most passes never look."""

    partition: Partition
    free: int
    _ends: list[Seconds] | None = None  # sorted release times, once needed
    _gpus: list[int] = field(default_factory=list)  # GPUs released at _ends[i]
    _started: list[tuple[Seconds, int]] = field(default_factory=list)  # before sorting
    _prefix: list[int] | None = None

    @classmethod
    def of(cls, partition: Partition) -> PartitionState:
        return cls(partition, partition.free_gpus)

    def start(self, gpus: int, end: Seconds) -> None:
        if gpus > self.free:
            raise ValueError(f"{gpus} GPUs do not fit in {self.free} free")
        self.free -= gpus
        if self._ends is None:
            self._started.append((end, gpus))
            return
        index = bisect.bisect_right(self._ends, end)
        self._ends.insert(index, end)
        self._gpus.insert(index, gpus)
        self._prefix = None

    def earliest(self, need: int, now: Seconds) -> Seconds | None:
        """When `need` GPUs are free at the earliest, if running work ends on time."""
        if need <= self.free:
            return now
        ends, prefix = self._sorted(), self._released()
        index = bisect.bisect_left(prefix, need - self.free)
        if index == len(prefix):
            return None
        return max(ends[index], now)

    def free_at(self, when: Seconds) -> int:
        """GPUs free at `when` (after what ends by then is released)."""
        ends, prefix = self._sorted(), self._released()
        index = bisect.bisect_right(ends, when)
        return self.free + (prefix[index - 1] if index else 0)

    def _sorted(self) -> list[Seconds]:
        if self._ends is None:
            pairs = sorted(
                [(r.expected_end, r.gpus) for r in self.partition.running] + self._started
            )
            self._ends = [end for end, _ in pairs]
            self._gpus = [gpus for _, gpus in pairs]
            self._started = []
        return self._ends

    def _released(self) -> list[int]:
        if self._prefix is None:
            self._sorted()
            total, prefix = 0, []
            for gpus in self._gpus:
                total += gpus
                prefix.append(total)
            self._prefix = prefix
        return self._prefix

    @property
    def load(self) -> float:
        total = self.partition.total_gpus
        return 1.0 - self.free / total if total else 1.0


def charge(partition: Partition, job: Job) -> float:
    """Worst-case charged GPU-hours: the time limit under the partition's billing."""
    gpus = job.gpus
    if partition.whole_nodes:
        per = partition.gpus_per_node
        gpus = max(job.nodes if gpus else 0, math.ceil(gpus / per)) * per
    return gpus * partition.billing_factor * job.time_limit / 3600.0


def fairshare_factors(
    projects: Iterable[str], shares: dict[str, float], usage: dict[str, float]
) -> dict[str, float]:
    """Slurm's classic factor 2^(-U/S): 1.0 for an idle project, 0.5 for one that used
    exactly its share, towards 0 for heavy users. U and S are normalised over `projects`."""
    names = set(projects)
    total_share = sum(shares.get(p, 1.0) for p in names) or 1.0
    total_usage = sum(max(usage.get(p, 0.0), 0.0) for p in names)
    factors = {}
    for project in names:
        if total_usage <= 0:
            factors[project] = 1.0
            continue
        share = max(shares.get(project, 1.0), 1e-9) / total_share
        used = max(usage.get(project, 0.0), 0.0) / total_usage
        factors[project] = 2.0 ** (-used / share)
    return factors


def priority(job: Job, now: Seconds, fairshare: float, policy: Policy) -> float:
    age = min(max(now - job.submitted_at, 0.0) / policy.age_saturation, 1.0)
    return policy.fairshare_weight * fairshare + policy.age_weight * age


def order(
    jobs: Iterable[Job], now: Seconds, factors: dict[str, float], policy: Policy
) -> list[Job]:
    """Highest priority first; ties go to the earlier submission, then the id."""
    queue = list(jobs)
    if _fair_share_is_even(queue, factors) and policy.age_weight >= 0:
        # Priority then falls (weakly) with the submission time, so this is the same order,
        # found without computing a priority per job: what a long queue needs.
        return sorted(queue, key=_BY_SUBMISSION)
    return sorted(
        queue,
        key=lambda j: (
            -priority(j, now, factors.get(j.project, 1.0), policy),
            j.submitted_at,
            j.id,
        ),
    )


_BY_SUBMISSION = attrgetter("submitted_at", "id")


def _fair_share_is_even(jobs: list[Job], factors: dict[str, float]) -> bool:
    projects = {j.project for j in jobs}
    values = {factors.get(p, 1.0) for p in projects}
    return len(values) <= 1


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
                self._wait(job, self._allocation_reason(job, fitting))
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
                self._wait(job, f"{job.gpus} GPUs never free up on its allowed partitions")
            return
        start, best = found
        partition = best.state.partition
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
                f"earliest estimated start {after(start - self.now)} at {partition.factory}",
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
            f"{after(start - self.now)} at {partition.factory}",
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
