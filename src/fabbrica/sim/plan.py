"""Capacity planning: the smallest federation that meets a p95 wait target.

The factories keep the default shares (proportional to home demand, each at least its
largest job); the whole federation is scaled, and a bisection over the scale finds the
fewest GPUs whose run meets the target. It assumes the p95 wait does not rise when GPUs are
added, which holds for these policies on real traces but is not a theorem.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fabbrica.sim import federation as fed
from fabbrica.sim.engine import QUEUE_DEPTH
from fabbrica.sim.study import Point, Progress, run_point
from fabbrica.sim.trace import TraceJob

MAX_DOUBLINGS = 20
MAX_HALVINGS = 40


class PlanError(ValueError):
    """The target cannot be met (or the search cannot start)."""


@dataclass(frozen=True)
class Plan:
    target_p95_wait: float
    policy: str
    point: Point  # the run at the chosen size
    steps: int  # simulations run


def plan(
    jobs: Sequence[TraceJob],
    base: fed.Federation,
    *,
    policy: str,
    target_p95_wait: float,
    tolerance: float = 0.01,
    limit_factor: float = 1.0,
    queue_depth: int = QUEUE_DEPTH,
    progress: Progress | None = None,
) -> Plan:
    """Bisection over a factor on `base` until the fewest GPUs meeting the target are known
    to within `tolerance` (a fraction of the GPUs) or one GPU."""
    minimum = fed.largest_per_site(base, jobs)
    steps = 0
    tried: dict[int, Point] = {}

    def attempt(factor: float) -> tuple[bool, fed.Federation]:
        nonlocal steps
        federation = base.scaled(factor, minimum)
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

    low, high = 0.0, 1.0
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
        small = base.scaled(low, minimum).gpus
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
