"""A scheduler that keeps its partitions' state between passes: the simulator's.

`schedule(snapshot)` builds the state of every partition from the snapshot, runs one pass
and drops it: what production needs, where each pass reads the world afresh. A replay runs
a pass per event (some 80,000 per policy on Philly), and between two passes one job
started or ended on one partition. `Scheduler` runs the same pass (`placement._Pass`: the
same code, the same decisions) on states it keeps: the work a pass starts stays started,
`release` ends it, and what a pass learned about the partitions (their free GPUs and nodes,
when running work frees how many GPUs, which partitions fit a shape of job and who pays
there) is kept while it holds. Pure, as the rest of the core: no I/O, no clock.

What it does not follow: partitions that change size (outages) and allocations topped up
between passes; a caller that needs them builds a `Snapshot` per pass. Charges a pass makes
stay taken (`Allocation.remaining_gpu_hours` is what is left at the first pass).
"""

from __future__ import annotations

import gc
from collections.abc import Sequence

from fabbrica.sched.model import Allocation, Decision, Job, Partition, Policy, Seconds, Snapshot
from fabbrica.sched.placement import _Pass


class Scheduler:
    """Passes over partitions that start as `partitions` say (free GPUs and nodes, nothing
    running) and change only by the work the passes start and `release` ends."""

    __slots__ = ("_allocations", "_partitions", "_pass", "_policy")

    def __init__(
        self,
        partitions: Sequence[Partition],
        allocations: Sequence[Allocation],
        policy: Policy,
        *,
        order: bool = True,
    ) -> None:
        """`order=False`: every Decision's `order` is empty (a caller that reads only the
        assignments, as the simulator, saves naming the jobs of each pass)."""
        self._partitions = tuple(partitions)
        if any(p.running for p in self._partitions):
            raise ValueError("a Scheduler starts from partitions with nothing running")
        self._allocations = tuple(allocations)
        self._policy = policy
        self._pass = _Pass(Snapshot(0.0, (), self._partitions, self._allocations, policy=policy))
        self._pass.with_order = order

    def schedule(
        self,
        now: Seconds,
        jobs: tuple[Job, ...],
        shares: dict[str, float] | None = None,
        usage: dict[str, float] | None = None,
    ) -> Decision:
        """One pass at `now` over `jobs`, as `schedule(Snapshot(now, jobs, ...))` would
        decide on the partitions as they are now. The cyclic garbage collector is paused
        for the pass, as `schedule` does."""
        pass_ = self._pass
        pass_.begin(now, jobs, shares or {}, usage or {})
        paused = gc.isenabled()
        if paused:
            gc.disable()
        try:
            return pass_.run()
        finally:
            if paused:
                gc.enable()

    def release(
        self, partition: int, gpus: int, expected_end: Seconds, nodes: tuple[int, ...] = ()
    ) -> None:
        """Work a pass started on `partitions[partition]` ends: the GPUs it holds (the
        assignment's `gpus_held` on tracked nodes, else the job's), its expected end there
        (start + time limit / speed) and its nodes."""
        self._pass.states[partition].release(gpus, expected_end, nodes)

    def free(self, partition: int) -> int:
        """Free GPUs of `partitions[partition]` now."""
        return self._pass.states[partition].free
