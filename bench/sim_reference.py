"""A plain EASY-backfill simulator, independent of Fabbrica's engine and core: the yardstick
for `fabbrica simulate`'s speed (and a cross-check of its decisions).

One event loop per policy run: arrivals and ends; at each instant the ends are released,
arrivals queued, and each queue that may start something is scheduled. Queues are FIFO by
submission; a pass looks at the first 500 waiting jobs (as the engine's queue depth). GPUs
are counted per factory (no nodes). Time limits are the run time rounded up to the hour.

- site-fifo: per home factory, strict first come first served;
- site-backfill: per home factory, EASY (the head's reservation; a later job starts if it
  fits now and ends before the reservation or uses GPUs the reservation does not need);
- federated: one queue on every factory: a job starts where it fits now (home first, then
  the least loaded), else reserves its earliest start at a factory no earlier job holds;
- pooled: one queue, one partition with all the GPUs, EASY.

Compares wall time with `fabbrica simulate` (the four policies, one run, same sitting),
medians of 3:

    uv run python bench/sim_reference.py [--trace T] [--load 0.9] [--runs 3]

`--per-policy` instead times each policy in this process (the reference's replay, then
the engine's `simulate`, CPU seconds, medians of `--runs`), simulation only on both sides:

    uv run python bench/sim_reference.py --per-policy
"""

from __future__ import annotations

import argparse
import heapq
import math
import resource
import statistics
import subprocess
import sys
import time
from itertools import islice
from pathlib import Path

from fabbrica.sim.federation import sized_for_load
from fabbrica.sim.trace import load

TRACE = Path(__file__).resolve().parents[2] / "shared" / "data" / "traces" / "philly.csv"
DEPTH = 500
POLICIES = ("site-fifo", "site-backfill", "federated", "pooled")


def limit(duration: float) -> float:
    return max(math.ceil(duration / 3600.0 - 1e-9), 1) * 3600.0


def replay(
    jobs: list[tuple[float, float, int, str]], sizes: dict[str, int], policy: str
) -> list[float]:
    """Start times per job. `jobs`: (submit, duration, gpus, home factory), by submission."""
    pooled = policy == "pooled"
    names = ["pool"] if pooled else list(sizes)
    free = {n: (sum(sizes.values()) if pooled else sizes[n]) for n in names}
    total = dict(free)
    running: dict[str, list[tuple[float, int]]] = {n: [] for n in names}  # (expected end, gpus)
    federated = policy == "federated"
    one = pooled or federated
    # waiting jobs in submission order (a dict keeps insertion order), and whether
    # something ended or arrived since the queue's last pass
    queues: dict[str, dict[int, None]] = {"all": {}} if one else {n: {} for n in names}
    dirty = dict.fromkeys(queues, False)
    limits = [limit(d) for _, d, _, _ in jobs]
    starts = [-1.0] * len(jobs)
    ends: list[tuple[float, int, str, float]] = []
    i, n = 0, len(jobs)
    while i < n or ends:
        now = min(jobs[i][0] if i < n else math.inf, ends[0][0] if ends else math.inf)
        while ends and ends[0][0] <= now:
            _, j, site, expected = heapq.heappop(ends)
            free[site] += jobs[j][2]
            running[site].remove((expected, jobs[j][2]))
            dirty["all" if one else site] = True
        while i < n and jobs[i][0] <= now:
            key = "all" if one else jobs[i][3]
            queues[key][i] = None
            dirty[key] = True
            i += 1
        for key, queue in queues.items():
            if not dirty[key]:
                continue
            dirty[key] = False
            started = []
            held: dict[str, tuple[float, int]] = {}  # factory -> (reserved start, extra GPUs)
            for j in list(islice(queue, DEPTH)):
                gpus, end = jobs[j][2], now + limits[j]
                where: str | None = None
                if federated:
                    home = jobs[j][3]
                    best: tuple[tuple[bool, float, str], str] | None = None
                    for f in names:
                        if free[f] < gpus:
                            continue
                        h = held.get(f)
                        if h is not None and end > h[0] and gpus > h[1]:
                            continue
                        rank = (f != home, 1 - free[f] / total[f], f)
                        if best is None or rank < best[0]:
                            best = (rank, f)
                    where = best[1] if best else None
                else:
                    site = "pool" if pooled else key
                    h = held.get(site)
                    if free[site] >= gpus and (h is None or end <= h[0] or gpus <= h[1]):
                        where = site
                if where is not None:
                    h = held.get(where)
                    if h is not None and end > h[0]:
                        held[where] = (h[0], h[1] - gpus)
                    free[where] -= gpus
                    running[where].append((end, gpus))
                    starts[j] = now
                    heapq.heappush(ends, (now + jobs[j][1], j, where, end))
                    started.append(j)
                    continue
                if policy == "site-fifo":
                    break
                # reserve the earliest start on a factory not yet held
                best_start = None
                for f in names if federated else ["pool" if pooled else key]:
                    if f in held or total[f] < gpus:
                        continue
                    got, when = free[f], now
                    for e, g in sorted(running[f]):
                        if got >= gpus:
                            break
                        got += g
                        when = e
                    if best_start is None or when < best_start[0]:
                        best_start = (when, f, got - gpus)
                if best_start is not None:
                    held[best_start[1]] = (best_start[0], best_start[2])
            for j in started:
                del queue[j]
    return starts


def reference_seconds(trace: Path, load_: float) -> tuple[float, float]:
    """(wall, CPU) seconds of the four policies, simulation only."""
    data = load(trace)
    federation = sized_for_load(data.jobs, load_)
    home = federation.home()
    jobs = [(j.submit, j.duration, j.gpus, home[j.cluster]) for j in data.jobs]
    sizes = {s.id: s.gpus for s in federation.sites}
    began, cpu = time.perf_counter(), time.process_time()
    for policy in POLICIES:
        starts = replay(jobs, sizes, policy)
        assert min(starts) >= 0
    return time.perf_counter() - began, time.process_time() - cpu


def fabbrica_seconds(trace: Path, load_: float) -> tuple[float, float]:
    """(wall, CPU) seconds of one `fabbrica simulate` run of the four policies, whole
    process (start-up, reading the trace, sizing, metrics, JSON)."""
    command = [sys.executable, "-m", "fabbrica", "simulate", "--trace", str(trace)]
    command += ["--load", str(load_), "--json"]
    for policy in POLICIES:
        command += ["--policy", policy]
    began, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command, check=True, capture_output=True)  # noqa: S603 (our own command)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return time.perf_counter() - began, cpu


def per_policy(trace: Path, load_: float, runs: int) -> None:
    """CPU seconds per policy, the reference's and the engine's, in this process."""
    from fabbrica.sim.engine import simulate

    data = load(trace)
    federation = sized_for_load(data.jobs, load_)
    home = federation.home()
    jobs = [(j.submit, j.duration, j.gpus, home[j.cluster]) for j in data.jobs]
    sizes = {s.id: s.gpus for s in federation.sites}
    print(f"\n| policy | reference CPU s | `simulate` CPU s | ratio |  (medians of {runs})")
    print("|---|---|---|---|")
    totals = [0.0, 0.0]
    for policy in POLICIES:
        theirs, ours = [], []
        for _ in range(runs):  # interleaved
            began = time.process_time()
            replay(jobs, sizes, policy)
            theirs.append(time.process_time() - began)
            began = time.process_time()
            simulate(data.jobs, federation, policy)
            ours.append(time.process_time() - began)
        a, b = statistics.median(theirs), statistics.median(ours)
        totals[0] += a
        totals[1] += b
        print(f"| {policy} | {a:.2f} | {b:.2f} | {b / a:.2f} |", flush=True)
    a, b = totals
    print(f"| all four | {a:.2f} | {b:.2f} | {b / a:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=TRACE)
    parser.add_argument("--load", type=float, default=0.9)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--per-policy", action="store_true", help="CPU per policy, in-process")
    args = parser.parse_args()
    if args.per_policy:
        per_policy(args.trace, args.load, args.runs)
        return
    ours: list[tuple[float, float]] = []
    theirs: list[tuple[float, float]] = []
    for _ in range(args.runs):  # interleaved: the same sitting for both
        theirs.append(reference_seconds(args.trace, args.load))
        ours.append(fabbrica_seconds(args.trace, args.load))
        print(
            f"reference {theirs[-1][0]:.1f} s wall, {theirs[-1][1]:.1f} s CPU; fabbrica "
            f"simulate {ours[-1][0]:.1f} s wall, {ours[-1][1]:.1f} s CPU",
            flush=True,
        )
    medians = {}
    for what, k in (("wall", 0), ("CPU", 1)):
        a = statistics.median(x[k] for x in ours)
        b = statistics.median(x[k] for x in theirs)
        medians[what] = (a, b)
        print(
            f"{what}, medians of {args.runs}: fabbrica simulate {a:.1f} s (four policies, "
            f"one run, whole process), reference {b:.1f} s (simulation only); "
            f"ratio {a / b:.2f}"
        )
    # the table of docs/simulator.md's section Speed
    (wall_ours, wall_ref), (cpu_ours, cpu_ref) = medians["wall"], medians["CPU"]
    print(f"\n| | wall s (median of {args.runs}) | CPU s (median of {args.runs}) |")
    print("|---|---|---|")
    ours_row = "`fabbrica simulate`, four policies, nodes packed"
    print(f"| {ours_row} | {wall_ours:.1f} | {cpu_ours:.1f} |")
    print(f"| reference, four policies, simulation only | {wall_ref:.1f} | {cpu_ref:.1f} |")
    print(f"| ratio | {wall_ours / wall_ref:.2f} | {cpu_ours / cpu_ref:.2f} |")


if __name__ == "__main__":
    main()
