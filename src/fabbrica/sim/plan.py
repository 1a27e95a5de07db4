"""Capacity planning: the smallest federation that meets a p95 wait target.

A federation of any size comes from a sizer: by default the default shares (each factory in
proportion to its home demand, at least its largest job) of that many GPUs; from a file,
the file's proportions scaled. A bisection over the size finds the fewest GPUs whose run
meets the target. It assumes the p95 wait does not rise when GPUs are added, which holds
for these policies on real traces but is not a theorem.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fabbrica.sim import federation as fed
from fabbrica.sim.engine import QUEUE_DEPTH
from fabbrica.sim.study import Point, Progress, run_point
from fabbrica.sim.trace import TraceJob

MAX_DOUBLINGS = 20
MAX_HALVINGS = 40

Sizer = Callable[[float], fed.Federation]  # total GPUs wanted -> a federation


class PlanError(ValueError):
    """The target cannot be met (or the search cannot start)."""


@dataclass(frozen=True)
class Plan:
    target_p95_wait: float
    policy: str
    point: Point  # the run at the chosen size
    steps: int  # simulations run


def default_sizer(jobs: Sequence[TraceJob]) -> Sizer:
    return lambda total: fed.sized_total(jobs, total)


def file_sizer(base: fed.Federation, jobs: Sequence[TraceJob]) -> Sizer:
    minimum = fed.largest_per_site(base, jobs)
    return lambda total: base.scaled(total / base.gpus, minimum)


def plan(
    jobs: Sequence[TraceJob],
    sizer: Sizer,
    *,
    start: float,
    policy: str,
    target_p95_wait: float,
    tolerance: float = 0.01,
    limit_factor: float = 1.0,
    queue_depth: int = QUEUE_DEPTH,
    progress: Progress | None = None,
) -> Plan:
    """Double from `start` GPUs until the target is met, then bisect until the fewest GPUs
    meeting it are known to within `tolerance` (a fraction of the size) or one GPU."""
    steps = 0
    tried: dict[int, Point] = {}

    def attempt(total: float) -> tuple[bool, fed.Federation]:
        nonlocal steps
        federation = sizer(total)
        if federation.gpus not in tried:
            steps += 1
            tried[federation.gpus] = run_point(
                jobs,
                federation,
                [policy],
                load=None,
                limit_factor=limit_factor,
                queue_depth=queue_depth,
            )
            if progress:
                p95 = tried[federation.gpus].results[policy].summary.overall.p95_wait
                progress(f"step {steps}: {federation.gpus:,} GPUs, p95 wait {p95:,.0f} s")
        return _meets(tried[federation.gpus], policy, target_p95_wait), federation

    low, high = 0.0, max(start, 1.0)
    met, federation = attempt(high)
    doublings = 0
    while not met:
        low, high = high, high * 2
        doublings += 1
        if doublings > MAX_DOUBLINGS:
            raise PlanError(
                f"no federation up to {federation.gpus:,} GPUs meets a p95 wait of "
                f"{target_p95_wait:,.0f} s under {policy}"
            )
        met, federation = attempt(high)
    best = federation
    for _ in range(MAX_HALVINGS):  # sizes are rounded: a gap may never close
        small = sizer(low).gpus if low > 0 else 0
        if best.gpus - small <= max(1, tolerance * best.gpus):
            break
        middle = (low + high) / 2
        met, federation = attempt(middle)
        if met:
            high, best = middle, federation
        else:
            low = middle
    return Plan(target_p95_wait, policy, tried[best.gpus], steps)


def _meets(point: Point, policy: str, target: float) -> bool:
    return point.results[policy].summary.overall.p95_wait <= target
