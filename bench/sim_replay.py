"""How fast the simulator replays a trace: every policy, several runs, medians.

Replays ../shared/data/traces/philly.csv (Microsoft Research's Philly trace, CC-BY 4.0;
Jeon et al., USENIX ATC 2019; as processed by the Pollux artifact) on the default
federation at --load, and prints per policy the median wall time and events per second,
the sum over the four policies against the 120 s budget, and the effect of the queue
depth (whole queue against Slurm's default of 500) from the same run.

    uv run python bench/sim_replay.py [--trace FILE] [--runs 3] [--load 0.9]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fabbrica.sim.engine import POLICIES, simulate
from fabbrica.sim.federation import sized_for_load
from fabbrica.sim.study import PHILLY_ATTRIBUTION
from fabbrica.sim.trace import load

BUDGET_S = 120.0
TRACE = Path(__file__).resolve().parents[2] / "shared" / "data" / "traces" / "philly.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=TRACE)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--load", type=float, default=0.9)
    args = parser.parse_args()
    trace = load(args.trace)
    federation = sized_for_load(trace.jobs, args.load)
    table = Table(
        title=f"{len(trace.jobs):,} jobs on {federation.gpus:,} GPUs, load {args.load}, "
        f"{args.runs} runs"
    )
    for column in (
        "policy",
        "queue depth",
        "median s",
        "min s",
        "max s",
        "events/s",
        "mean wait s",
    ):
        table.add_column(column, justify="right" if column != "policy" else "left")
    total = 0.0
    unlimited: dict[str, float] = {}
    for policy in POLICIES:
        for depth in (500, 0):
            walls, wait = [], 0.0
            for _ in range(args.runs):
                run = simulate(trace.jobs, federation, policy, queue_depth=depth)
                walls.append(run.wall_seconds)
                wait = sum(s - j.submit for s, j in zip(run.starts, trace.jobs, strict=True))
            median = statistics.median(walls)
            if depth == 500:
                total += median
            else:
                unlimited[policy] = median
            table.add_row(
                policy,
                str(depth or "all"),
                f"{median:.1f}",
                f"{min(walls):.1f}",
                f"{max(walls):.1f}",
                f"{2 * len(trace.jobs) / median:,.0f}",
                f"{wait / len(trace.jobs):,.1f}",
            )
    console = Console()
    console.print(table)
    console.print(
        f"four policies at depth 500: {total:.1f} s of the {BUDGET_S:.0f} s budget "
        f"({total / BUDGET_S:.2f}); whole queue: {sum(unlimited.values()):.1f} s"
    )
    console.print(PHILLY_ATTRIBUTION, style="dim")


if __name__ == "__main__":
    main()
