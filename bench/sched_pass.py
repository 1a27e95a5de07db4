"""How long one scheduling pass takes over 10,000 queued jobs on a large federation.

The federation: the 19 factories of the shipped catalog (their operating partitions, or
an assumed 2,048 GPUs where no size is published) plus 4 gigafactories of 100,000 GPUs
each, about 90% busy with running jobs. The queue: 10,000 jobs from 400 projects, 1 to
512 GPUs, 1 to 48 h limits, some pinned to a GPU model or to countries. Prints a table of
medians over several runs, and ratios against the 1 s target and between policies
measured in the same run.

    uv run python bench/sched_pass.py [--jobs 10000] [--runs 5] [--seed 1]
    uv run python bench/sched_pass.py --jobs 100000     # the federation-scale queue
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

from rich.console import Console
from rich.table import Table

from fabbrica.catalog.loader import load_catalog
from fabbrica.sched import Allocation, Job, Partition, Policy, Running, Snapshot, schedule
from fabbrica.services.access.calls import operating_gpus

H = 3600.0
NOW = 1_800_000_000.0
GIGA_COUNTRIES = ["DE", "FR", "IT", "ES"]
ASSUMED_GPUS = 2048  # for the catalog factories whose size is not published
SIZES = [1, 1, 1, 2, 4, 4, 8, 8, 8, 16, 32, 64, 128, 512]


def federation(rng: random.Random) -> list[Partition]:
    """Every catalog factory: its operating partitions, or (size unpublished) an assumed
    partition of ASSUMED_GPUS H100; then the gigafactories."""
    catalog = load_catalog()
    parts: list[Partition] = []
    for factory in catalog.factories:
        if operating_gpus(factory) == 0:
            parts.append(
                busy(rng, factory.id, "assumed", factory.country, "h100", 4, ASSUMED_GPUS, 1.0)
            )
            continue
        for p in factory.operating_partitions():
            parts.append(
                busy(
                    rng,
                    factory.id,
                    p.id,
                    factory.country,
                    p.gpu_model,
                    p.gpus_per_node,
                    p.gpus,
                    p.billing.factor,
                )
            )
    for i, country in enumerate(GIGA_COUNTRIES):
        parts.append(busy(rng, f"giga-{i + 1}", "gpu", country, "gb300", 4, 100_000, 1.0))
    return parts


def busy(
    rng: random.Random,
    factory: str,
    pid: str,
    country: str,
    model: str,
    per_node: int,
    total: int,
    factor: float,
) -> Partition:
    running, used = [], 0
    while used < 0.9 * total:
        gpus = min(rng.choice(SIZES), total - used)
        running.append(Running(gpus, NOW + rng.uniform(0.1, 48) * H))
        used += gpus
    return Partition(
        factory=factory,
        id=pid,
        country=country,
        gpu_model=model,
        gpus_per_node=per_node,
        total_gpus=total,
        free_gpus=total - used,
        billing_factor=factor,
        running=tuple(running),
    )


def queue(rng: random.Random, n: int, parts: list[Partition]) -> tuple[list[Job], list[Allocation]]:
    factories = sorted({p.factory for p in parts})
    models = sorted({p.gpu_model for p in parts})
    countries = sorted({p.country for p in parts})
    projects = [f"FAB-AIF-2026PG11-{i:04d}" for i in range(400)]
    allocations: list[Allocation] = []
    for project in projects:
        for factory in rng.sample(factories, k=rng.randint(1, 4)):
            allocations.append(
                Allocation(len(allocations) + 1, project, factory, rng.uniform(1_000, 500_000))
            )
    jobs = []
    for i in range(n):
        gpus = rng.choice(SIZES)
        jobs.append(
            Job(
                id=f"job-{i}",
                project=rng.choice(projects),
                gpus=gpus,
                nodes=max(1, gpus // 4),
                time_limit=rng.uniform(1, 48) * H,
                submitted_at=NOW - rng.uniform(0, 7 * 86400),
                gpu_model=rng.choice(models) if rng.random() < 0.3 else None,
                countries=frozenset(rng.sample(countries, 2)) if rng.random() < 0.2 else None,
                home_country=rng.choice(countries),
            )
        )
    return jobs, allocations


def measure(snapshot: Snapshot, runs: int) -> tuple[list[float], list[float], int, int]:
    """Wall-clock and CPU (process) times of `runs` passes. On a shared machine the CPU
    time is the steadier figure: the wall clock also counts the time other processes run."""
    times, cpu, placed, waiting = [], [], 0, 0
    for _ in range(runs):
        began, began_cpu = time.perf_counter(), time.process_time()
        decision = schedule(snapshot)
        times.append(time.perf_counter() - began)
        cpu.append(time.process_time() - began_cpu)
        placed, waiting = len(decision.assignments), len(decision.waiting)
    return times, cpu, placed, waiting


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    parts = federation(rng)
    jobs, allocations = queue(rng, args.jobs, parts)
    usage = {a.project: rng.uniform(0, 50_000) for a in allocations}
    gpus = sum(p.total_gpus for p in parts)
    running = sum(len(p.running) for p in parts)

    table = Table(
        title=f"one scheduling pass: {len(jobs):,} queued jobs, {len(parts)} "
        f"partitions at {len({p.factory for p in parts})} factories, "
        f"{gpus:,} GPUs, {running:,} running jobs"
    )
    columns = ("policy", "median s", "min s", "max s", "CPU median s", "placed", "waiting")
    for column in (*columns, "vs 1 s target"):
        table.add_column(column, justify="right")
    medians = {}
    for name, policy in (("EASY backfill", Policy()), ("strict FIFO", Policy(backfill=False))):
        snapshot = Snapshot(
            NOW, tuple(jobs), tuple(parts), tuple(allocations), usage=usage, policy=policy
        )
        times, cpu, placed, waiting = measure(snapshot, args.runs)
        medians[name] = statistics.median(times)
        table.add_row(
            name,
            f"{medians[name]:.3f}",
            f"{min(times):.3f}",
            f"{max(times):.3f}",
            f"{statistics.median(cpu):.3f}",
            f"{placed:,}",
            f"{waiting:,}",
            f"{medians[name] / 1.0:.2f}x",
        )
    console = Console()
    console.print(table)
    ratio = medians["EASY backfill"] / medians["strict FIFO"]
    console.print(f"EASY backfill / strict FIFO time: {ratio:.2f} (median of {args.runs} runs)")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    console.print(f"load average at the end: {load} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
