"""A synthetic LLM-era trace: jobs of 1 to 4,096 GPUs with a heavy tail, seeded.

Seven teams (virtual clusters) submit jobs for four weeks, a Poisson stream with a daily
cycle. A team's job sizes are powers of two up to its largest (4,096 GPUs for the frontier
team, 16 for research), P(2^k) proportional to 2^(-0.55 k): most jobs take 1 to 8 GPUs, most
GPU-hours go to jobs of 128 GPUs and more. Run times are log-normal, longer for larger jobs
(median 1 h x 2^(k/2), sigma 1.4, at most 7 days). The same seed gives the same trace; at
load 0.9 the default federation has 10,305 GPUs, only the frontier team's factory (4,688)
fits its 4,096-GPU jobs.

    uv run python bench/llm_trace.py [--seed 2026] [--jobs 12000] [--days 28] > llm.csv
"""

from __future__ import annotations

import argparse
import csv
import math
import random
import sys
from typing import TextIO

SEED = 2026
JOBS = 12_000
DAYS = 28
# team -> (share of the jobs, largest job in GPUs)
TEAMS = {
    "frontier": (0.06, 4096),
    "foundation": (0.10, 1024),
    "vision": (0.14, 256),
    "nlp": (0.20, 128),
    "speech": (0.14, 64),
    "rl": (0.16, 32),
    "research": (0.20, 16),
}
ALPHA = 0.55  # P(2^k) ~ 2^(-ALPHA k)
MAX_RUN_S = 7 * 86400.0


def rows(
    seed: int = SEED, jobs: int = JOBS, days: int = DAYS
) -> list[tuple[float, float, int, str]]:
    """(submission seconds, run time seconds, GPUs, team), in submission order."""
    rng = random.Random(seed)
    span = days * 86400.0
    teams = list(TEAMS)
    weights = [TEAMS[t][0] for t in teams]
    found: list[tuple[float, float, int, str]] = []
    t = 0.0
    rate = jobs / span
    while len(found) < jobs:
        t += rng.expovariate(rate)
        # a daily cycle: twice as many arrivals at 14:00 as at 02:00 (thinning)
        if rng.random() > (2 + math.sin(2 * math.pi * (t / 86400.0 - 0.375))) / 3:
            continue
        team = rng.choices(teams, weights)[0]
        top = int(math.log2(TEAMS[team][1]))
        k = rng.choices(range(top + 1), [2 ** (-ALPHA * i) for i in range(top + 1)])[0]
        run = min(rng.lognormvariate(math.log(3600.0 * 2 ** (k / 2)), 1.4), MAX_RUN_S)
        found.append((round(t, 1), round(max(run, 1.0), 1), 2**k, team))
    return found


def write(out: TextIO, seed: int = SEED, jobs: int = JOBS, days: int = DAYS) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("timestamp", "duration", "num_gpus", "cluster"))
    writer.writerows(rows(seed, jobs, days))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--jobs", type=int, default=JOBS)
    parser.add_argument("--days", type=int, default=DAYS)
    args = parser.parse_args()
    write(sys.stdout, args.seed, args.jobs, args.days)


if __name__ == "__main__":
    main()
