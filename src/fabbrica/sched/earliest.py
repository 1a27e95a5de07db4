"""Where a blocked job could start first: its reservation's partition, or its estimate."""

from __future__ import annotations

from fabbrica.sched.capacity import PartitionState
from fabbrica.sched.model import Allocation, Job, Seconds

# where a job may run: the partition, the allocation that pays, the worst-case charge (a
# plain tuple: a pass over 100,000 jobs builds hundreds of thousands of them)
_Candidate = tuple[PartitionState, Allocation, float]


def rank(job: Job, c: _Candidate) -> tuple[int, float, str, str]:
    """Home country first, then the least loaded, then the factory and the id."""
    state = c[0]
    partition = state.partition
    away = 0 if job.home_country and partition.country == job.home_country else 1
    return (away, state.load, partition.factory, partition.id)


def earliest(
    job: Job, candidates: list[_Candidate], now: Seconds
) -> tuple[Seconds, _Candidate] | None:
    """The candidate where the job could start first (if running work ends on time); ties
    go to the best `rank`."""
    gpus = job.gpus
    first: Seconds | None = None
    best: _Candidate | None = None
    tied: list[_Candidate] | None = None
    for c in candidates:
        state = c[0]
        t = state.earliest(gpus, now) if state.nodes is None else state.earliest_packed(gpus, now)
        if t is None:
            continue
        if first is None or t < first:
            first, best, tied = t, c, None
        elif t == first:
            if tied is None:
                tied = [best] if best is not None else []
            tied.append(c)
    if first is None or best is None:
        return None
    if tied is not None:
        best = min(tied, key=lambda c: rank(job, c))
    return first, best
