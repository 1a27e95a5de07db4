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

import gc
import math
from collections import defaultdict
from dataclasses import dataclass
from itertools import compress, islice, repeat
from operator import attrgetter, le

from fabbrica.sched.capacity import PartitionState, charge
from fabbrica.sched.earliest import _Candidate, earliest
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


_PROJECT, _ID, _GPUS = attrgetter("project"), attrgetter("id"), attrgetter("gpus")


# Where a job's project may charge it, among the partitions its shape fits: each such
# partition with its allocations of a matching GPU model; and (for the reason a job waits
# when none has enough left) each with all its allocations at that factory.
_Payers = list[tuple[PartitionState, list[Allocation]]]
# The partitions a shape fits, and by project who pays there: cached for the pass, and
# shared by the shapes that fit the same partitions. A long queue repeats few shapes and
# projects, and what a pass keeps for them stays small (the garbage collector walks it).
_Fit = tuple[list[PartitionState], dict[str, tuple[_Payers, _Payers]]]


class _Pass:
    """One pass; or, kept by a `Scheduler`, every pass of a replay: what a pass learns
    about the partitions and allocations (the states, what fits each shape of job, who pays
    there) stays, and `begin` resets only what belongs to one pass."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.states = states = [PartitionState(p, p.free_gpus) for p in snapshot.partitions]
        self.by_factory: dict[str, list[PartitionState]] = {}
        for state in states:
            factory = state.partition.factory
            if factory in self.by_factory:
                self.by_factory[factory].append(state)
            else:
                self.by_factory[factory] = [state]
        self.left: dict[int, float] = {a.id: a.remaining_gpu_hours for a in snapshot.allocations}
        # project -> factory -> its allocations there, in the snapshot's order
        self.by_project: dict[str, dict[str, list[Allocation]]] = defaultdict(dict)
        for allocation in snapshot.allocations:
            self.by_project[allocation.project].setdefault(allocation.factory, []).append(
                allocation
            )
        # shape -> what fits it and who pays there (what fits does not change in a pass);
        # the same by the fitting partitions (their ids)
        self.fitting: dict[tuple[object, ...], _Fit] = {}
        self.interned: dict[tuple[int, ...], _Fit] = {}
        # (payers, GPUs, time limit) -> the candidates, where every partition's first
        # allocation is unbounded (the simulator's): they never change
        self.unbounded: dict[tuple[int, int, float, int], list[_Candidate]] = {}
        self.per_partition = snapshot.policy.reservations != "federation"
        self.backfill = snapshot.policy.backfill
        self.partitions = len(snapshot.partitions)
        self.explain = snapshot.policy.explain
        self.fastest = max((p.speed for p in snapshot.partitions), default=1.0)
        self.given = snapshot.partitions  # as given: what the reasons name
        self.with_order = True  # Decision.order (a `Scheduler` may go without)
        # the last order found without usage, and for which jobs (never changed)
        self.ranked_jobs: tuple[Job, ...] | None = None
        self.ranked: list[Job] = []
        self.ranked_ids: tuple[str, ...] = ()
        self.ranked_gpus: list[int] | None = None  # their GPUs, once a pass needs them
        self.policy = snapshot.policy
        self.begin(snapshot.now, snapshot.jobs, snapshot.shares, snapshot.usage)

    def begin(
        self,
        now: Seconds,
        jobs: tuple[Job, ...],
        shares: dict[str, float],
        usage: dict[str, float],
    ) -> None:
        """What one pass starts from: its time, its jobs and the projects' shares and
        usage, no reservation held."""
        self.now = now
        self.jobs, self.shares, self.usage = jobs, shares, usage
        self.held: dict[tuple[str, str], _Held] = {}  # partition key -> its reservation
        self.reserved: list[Reservation] = []  # in priority order
        self.max_free = 0  # most free GPUs of any partition without a reservation
        self.ceiling = 0  # most free GPUs of any partition
        self.stale = True  # max_free and ceiling to count again (work started, or held)
        self.full = self._no_reservation_left()  # no reservation is left to take
        self.closed: set[tuple[str, str]] = set()  # strict FIFO: partitions behind a blocked job
        self.last: Job | None = None  # the last job in priority order
        self.assignments: list[Assignment] = []
        self.waiting: list[Waiting] = []

    def run(self) -> Decision:
        jobs, policy = self.jobs, self.policy
        named = self.with_order
        if self.usage or policy.age_weight < 0:
            projects = set(map(_PROJECT, jobs))
            factors = fairshare_factors(projects, self.shares, self.usage)
            ranked = order(jobs, self.now, factors, policy, projects)
            ids = tuple(map(_ID, ranked)) if named else ()
        elif jobs is self.ranked_jobs:
            # no usage: every factor is 1.0 and the order is by submission, whatever the
            # time; the same jobs as the last pass (a kept `Scheduler`): the same order
            ranked, ids = self.ranked, self.ranked_ids
        else:
            ranked = order(jobs, self.now, {}, policy, set())  # every factor 1.0
            ids = tuple(map(_ID, ranked)) if named else ()
            self.ranked_jobs, self.ranked, self.ranked_ids = jobs, ranked, ids
            self.ranked_gpus = None
        backfill = policy.backfill
        quiet = not self.explain
        self.last = ranked[-1] if ranked else None
        if quiet and backfill:
            self._run_quiet(ranked)
        else:
            for job in ranked:
                if quiet and len(self.closed) == len(self.states):
                    break  # strict FIFO: every partition is behind a blocked job
                self._place(job)
        return Decision(
            assignments=tuple(self.assignments),
            waiting=tuple(self.waiting),
            reservation=self.reserved[0] if self.reserved else None,
            order=ids,
            reservations=tuple(self.reserved),
        )

    def _run_quiet(self, ranked: list[Job]) -> None:
        """A quiet backfill pass: every job is placed until no reservation is left to
        take; from then on a job that cannot start now would only wait, and is passed
        over. Most of a long queue asks more GPUs than any partition has free (`ceiling`):
        those are passed over in C. The ceiling only falls during a pass (work starts,
        none ends), so the jobs at most the ceiling when the rest is filtered include
        every job at most the ceiling later; each is checked again."""
        placed = 0
        for job in ranked:
            if self.full:
                break
            self._place(job)
            placed += 1
        else:
            return
        if self.stale:
            self._update_free()
        if ranked is self.ranked:  # kept for the same jobs: their sizes too
            if self.ranked_gpus is None:
                self.ranked_gpus = list(map(_GPUS, ranked))
            sizes = self.ranked_gpus
        else:
            sizes = list(map(_GPUS, ranked))
        fits = map(le, islice(sizes, placed, None), repeat(self.ceiling))
        small = compress(islice(ranked, placed, None), fits)
        for job in small:
            if self.stale:
                self._update_free()
            if job.gpus > self.ceiling or not self._might_start(job):
                continue
            self._place(job)

    def _no_reservation_left(self) -> bool:
        if self.per_partition:
            return len(self.held) == len(self.states)
        return bool(self.held)

    # --- one job -----------------------------------------------------------------------

    def _place(self, job: Job) -> None:
        fit = self.fitting.get((job.gpus, job.nodes, job.gpu_model, job.factories, job.countries))
        if fit is None:
            fit = self._fit(job)
        fitting, by_project = fit
        payers = by_project.get(job.project)
        if payers is None:
            payers = by_project[job.project] = self._payers(job.project, fitting)
        matching, any_model = payers
        if not matching:
            if self.explain:
                if not fitting:
                    self._wait(job, no_candidate_reason(job, self.given))
                else:
                    note = residency_note(job, {s.partition.factory for s in fitting})
                    self._wait(job, self._allocation_reason(job, fitting, any_model) + note)
            return
        # The candidates: where an allocation of the project still covers the job's worst
        # case (the charge is `capacity.charge`'s arithmetic, in the same order); among them
        # those that may start it now without delaying a reservation. The pass's hottest
        # loop: a queue of 100,000 jobs runs it for each.
        gpus, time_limit, nodes = job.gpus, job.time_limit, job.nodes
        end = self.now + time_limit
        closed, held = self.closed, self.held
        key = (id(matching), gpus, time_limit, nodes)
        candidates = self.unbounded.get(key)
        if candidates is None:
            candidates = self._candidates(gpus, time_limit, nodes, matching)
            if len(candidates) == len(matching) and all(
                self.left[a.id] == math.inf and math.isfinite(cost) for _, a, cost in candidates
            ):
                # each partition's paying allocation has no bound (the simulator's): it pays
                # whatever this pass or those before took (a kept `Scheduler`), and those
                # before it in its list never will (what is left only falls)
                self.unbounded[key] = candidates
        startable: list[_Candidate] = []
        for c in candidates:
            state = c[0]
            if gpus <= state.free and state.key not in closed:
                if state.nodes is not None and not state.fits(gpus):
                    continue  # free GPUs, but not on nodes that can take it
                h = held.get(state.key)
                here = end if state.speed == 1.0 else self.now + time_limit / state.speed
                if h is None or here <= h.reservation.start or gpus <= h.extra:
                    startable.append(c)
        if startable:
            best = startable[0]
            if len(startable) > 1:
                # `rank`, inlined: the first of the lowest (away, load, factory, id)
                home = job.home_country
                low = None
                for c in startable:
                    state = c[0]
                    partition = state.partition
                    total = partition.total_gpus
                    rank = (
                        0 if home and partition.country == home else 1,
                        1.0 - state.free / total if total else 1.0,  # `load`, inlined
                        partition.factory,
                        partition.id,
                    )
                    if low is None or rank < low:
                        low, best = rank, c
            self._start(job, best)
        elif candidates:
            self._block(job, candidates)
        elif self.explain:
            note = residency_note(job, {s.partition.factory for s in fitting})
            self._wait(job, self._allocation_reason(job, fitting, any_model) + note)

    def _candidates(
        self, gpus: int, time_limit: Seconds, nodes: int, matching: _Payers
    ) -> list[_Candidate]:
        """Where an allocation of the project still covers the job's worst case (the
        charge is `capacity.charge`'s arithmetic, in the same order: under a whole-node
        rule every node the job spans is charged whole): the first such allocation of each
        partition, with the charge."""
        left = self.left
        candidates: list[_Candidate] = []
        for state, allocations in matching:
            per = state.whole_node_gpus
            charged = gpus if not per or not gpus else max(nodes, math.ceil(gpus / per)) * per
            cost = charged * state.billing_factor * time_limit / 3600.0
            for allocation in allocations:
                if left[allocation.id] + 1e-9 >= cost:
                    candidates.append((state, allocation, cost))
                    break
        return candidates

    def _fit(self, job: Job) -> _Fit:
        factories = job.factories if job.factories is not None else self.by_factory.keys()
        # `fits`, inlined (a pass asks it of every partition for each shape of job)
        countries, model, gpus, nodes = job.countries, job.gpu_model, job.gpus, job.nodes
        fitting = []
        for factory in factories:
            for state in self.by_factory.get(factory, ()):
                partition = state.partition
                if (
                    (countries is None or partition.country in countries)
                    and (model is None or partition.gpu_model == model)
                    and (nodes <= 1 or partition.multi_node)
                    and math.ceil(gpus / nodes) <= partition.gpus_per_node
                    and gpus <= partition.total_gpus
                ):
                    fitting.append(state)
        fit = self.interned.get(tuple(map(id, fitting)))
        if fit is None:
            fit = self.interned[tuple(map(id, fitting))] = (fitting, {})
        self.fitting[(job.gpus, job.nodes, job.gpu_model, job.factories, job.countries)] = fit
        return fit

    def _payers(self, project: str, fitting: list[PartitionState]) -> tuple[_Payers, _Payers]:
        mine = self.by_project.get(project, {})
        matching, any_model = [], []
        for state in fitting:
            here = mine.get(state.partition.factory)
            if here is None:
                continue
            any_model.append((state, here))
            model = state.partition.gpu_model
            allocations = [a for a in here if a.gpu_model is None or a.gpu_model == model]
            if allocations:
                matching.append((state, allocations))
        return matching, any_model

    def _update_free(self) -> None:
        held = self.held
        self.max_free = max((s.free for s in self.states if s.key not in held), default=0)
        self.ceiling = max((s.free for s in self.states), default=0)  # most free anywhere
        self.stale = False

    def _might_start(self, job: Job) -> bool:
        """A quick necessary condition for some partition to start the job now (`_place`)."""
        if job.gpus <= self.max_free:
            return True
        end = self.now + job.time_limit / self.fastest  # its earliest possible end
        return any(
            job.gpus <= h.state.free and (end <= h.reservation.start or job.gpus <= h.extra)
            for h in self.held.values()
        )

    def _start(self, job: Job, c: _Candidate) -> None:
        state, allocation, cost = c
        end = self.now + job.time_limit / state.speed
        held = self.held.get(state.key)
        backfilled = bool(self.held)
        nodes: tuple[int, ...] = ()
        taken = 0
        if state.nodes is None:
            state.start(job.gpus, end)
        else:
            nodes, taken = state.take(job.gpus, end)
        if held is not None and end > held.reservation.start:
            held.extra -= taken or job.gpus
        self.stale = True
        self.left[allocation.id] -= cost
        partition = state.partition
        self.assignments.append(
            Assignment(
                job=job.id,
                factory=partition.factory,
                partition=partition.id,
                allocation=allocation.id,
                charge_gpu_hours=cost,
                start=self.now,
                backfilled=backfilled,
                nodes=nodes,
                gpus_held=taken,
            )
        )

    def _block(self, job: Job, candidates: list[_Candidate]) -> None:
        backfill, explain, held = self.backfill, self.explain, self.held
        if not backfill and not explain and job is self.last:
            return  # quiet strict FIFO: what it closes matters only to the jobs after it
        reserve = None
        if backfill:
            if held and not self.per_partition:
                to_hold: list[_Candidate] = []
            elif len(held) == self.partitions:
                to_hold = []  # every partition is held already
            else:
                to_hold = [c for c in candidates if c[0].key not in held]
            if to_hold:
                reserve = earliest(job, to_hold, self.now)
            if not explain and reserve is None:
                return  # it would only wait: nothing to estimate
        if reserve is not None:
            start, best = reserve
            partition = best[0].partition
            reservation = Reservation(job.id, partition.factory, partition.id, start, job.gpus)
            extra = best[0].free_at(start) - best[0].need(job.gpus)
            held[partition.key] = _Held(reservation, best[0], extra)
            self.reserved.append(reservation)
            self.stale = True
            self.full = self._no_reservation_left()
            if explain:
                note = residency_note(job, {c[0].partition.factory for c in candidates})
                self.waiting.append(
                    Waiting(
                        job.id,
                        f"no allowed factory has {job.gpus} free {_model(job)}GPUs now; "
                        f"reserved: earliest estimated start {after(start - self.now)} at "
                        f"{partition.factory}{note}",
                        start,
                        partition.factory,
                    )
                )
            return
        found = earliest(job, candidates, self.now)
        if found is None:
            if explain:
                note = residency_note(job, {c[0].partition.factory for c in candidates})
                self._wait(job, f"{job.gpus} GPUs never free up on its allowed partitions{note}")
            return
        if not backfill:
            self.closed.update([c[0].key for c in candidates])
        if not explain:
            return
        start, best = found
        factory = best[0].partition.factory
        note = residency_note(job, {c[0].partition.factory for c in candidates})
        self.waiting.append(
            Waiting(
                job.id,
                f"no allowed factory has {job.gpus} free {_model(job)}GPUs now (or they are "
                f"held for a higher-priority job); earliest estimated start "
                f"{after(start - self.now)} at {factory}{note}",
                start,
                factory,
            )
        )

    def _allocation_reason(self, job: Job, fitting: list[PartitionState], payers: _Payers) -> str:
        """Why a job that fits waits: no allocation, or not enough left in any (`payers`:
        the fitting partitions where its project holds allocations, with them)."""
        best: tuple[float, float, str] | None = None
        for state, allocations in payers:
            cost = charge(state.partition, job)
            for allocation in allocations:
                left = self.left[allocation.id]
                if best is None or left > best[0]:
                    best = (left, cost, allocation.factory)
        if best is None:
            factories = ", ".join(sorted({s.partition.factory for s in fitting}))
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
    """Run one pass over the snapshot; the snapshot is not changed.

    The cyclic garbage collector is paused for the pass (and resumed as it was): a pass over
    100,000 jobs allocates a waiting reason per job, makes no garbage cycles, and would
    otherwise spend about a third of its time in full collections walking the process's
    heap (the snapshot included). Reference counting still frees what the pass drops."""
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        return _Pass(snapshot).run()
    finally:
        if paused:
            gc.enable()
