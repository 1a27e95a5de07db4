"""What `fabbrica simulate` and `fabbrica plan` print: the trace, each point's tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fabbrica.cli.errors import BAD_INPUT, CliError
from fabbrica.cli.output import print_table, say


def plot(jobs: Any, points: list[Any], path: Path, note: str | None) -> None:
    from fabbrica.sim.plot import PlotUnavailable, wait_cdfs

    try:
        wait_cdfs(jobs, points, path, note)
    except PlotUnavailable as exc:
        raise CliError(str(exc), BAD_INPUT) from exc
    except OSError as exc:
        raise CliError(f"--plot: cannot write {path}: {exc.strerror or exc}") from exc


def trace_json(data: Any, replayed: int, scale: int, copies: int = 1) -> dict[str, Any]:
    return {
        "path": data.source,
        "rows": data.rows,
        "jobs": len(data.jobs),
        "replayed_jobs": replayed,
        "scale": scale,
        "copies": copies,
        "skipped": data.skipped,
        "out_of_order": data.out_of_order,
        "clusters": len(data.clusters()),
        "span_days": data.span / 86400.0,
    }


def print_trace(data: Any, replayed: int, scale: int, copies: int = 1) -> None:
    skipped = ", ".join(f"{n:,} {k}" for k, n in data.skipped.items()) or "none"
    times = (
        f" x {scale} (scale) = {replayed:,} jobs"
        if scale > 1
        else f" x {copies} copies over a week = {replayed:,} jobs"
        if copies > 1
        else ""
    )
    say(
        f"trace {data.source}: {len(data.jobs):,} jobs{times} from {len(data.clusters())} "
        f"clusters over {data.span / 86400:.1f} days; skipped rows: {skipped}; "
        f"{data.out_of_order:,} out of order (sorted)"
    )


def print_factories(federation: Any) -> None:
    """The factories with their sizes, where those come from, and `≈` on estimates (shown
    when a federation was given: a file or the catalog)."""
    print_table(
        f"{federation.gpus:,} GPUs in {len(federation.sites)} factories (≈: an estimate)",
        [
            ("factory", lambda s: s.id),
            ("country", lambda s: s.country),
            ("GPUs", lambda s: ("≈" if s.estimated else "") + f"{s.gpus:,}"),
            ("model", lambda s: s.gpu_model),
            ("per node", lambda s: str(s.gpus_per_node)),
            ("size from", lambda s: s.basis),
            ("home clusters", lambda s: str(len(s.clusters))),
        ],
        federation.sites,
    )


def print_point(point: Any, *, factories: bool = False) -> None:
    from fabbrica.sim.study import beats_pooled

    if factories:
        print_factories(point.federation)

    title = (
        f"{point.federation.gpus:,} GPUs in {len(point.federation.sites)} factories, "
        f"offered load {point.offered_load:.2f}"
    )
    results = point.results.items()
    print_table(
        f"{title}: waits",
        [
            ("policy", lambda r: r[0]),
            ("mean", lambda r: human(r[1].summary.overall.mean_wait)),
            ("p50", lambda r: human(r[1].summary.overall.p50_wait)),
            ("p95", lambda r: human(r[1].summary.overall.p95_wait)),
            ("p99", lambda r: human(r[1].summary.overall.p99_wait)),
            ("mean JCT", lambda r: human(r[1].summary.overall.mean_jct)),
            ("slowdown", lambda r: f"{r[1].summary.overall.mean_bounded_slowdown:,.1f}"),
            ("GPU util", lambda r: f"{r[1].summary.utilisation:.0%}"),
            ("makespan", lambda r: human(r[1].summary.makespan)),
        ],
        list(results),
    )
    sizes = [
        (name, size, m) for name, r in results for size, m in r.summary.by_size.items() if m.jobs
    ]
    print_table(
        "by job size (GPUs)",
        [
            ("policy", lambda r: r[0]),
            ("GPUs", lambda r: r[1]),
            ("jobs", lambda r: f"{r[2].jobs:,}"),
            ("mean wait", lambda r: human(r[2].mean_wait)),
            ("p95 wait", lambda r: human(r[2].p95_wait)),
            ("max wait", lambda r: human(r[2].max_wait)),
            ("slowdown", lambda r: f"{r[2].mean_bounded_slowdown:,.1f}"),
        ],
        sizes,
    )
    lost = [(name, r) for name, r in results if r.without_outage is not None]
    if lost:
        print_table(
            "what the outage cost",
            [
                ("policy", lambda r: r[0]),
                ("runs requeued", lambda r: f"{r[1].run.requeued:,}"),
                ("GPU-hours lost", lambda r: f"{r[1].run.lost_gpu_hours:,.1f}"),
                ("mean wait", lambda r: human(r[1].summary.overall.mean_wait)),
                ("without outage", lambda r: human(r[1].without_outage.overall.mean_wait)),
                ("p95 wait", lambda r: human(r[1].summary.overall.p95_wait)),
                ("without outage ", lambda r: human(r[1].without_outage.overall.p95_wait)),
            ],
            lost,
        )
    for label, (a, b) in {
        "federated / site-backfill": ("federated", "site-backfill"),
        "federated / pooled": ("federated", "pooled"),
        "federated / naive": ("federated", "naive"),
    }.items():
        ratio = point.ratio(a, b)
        if ratio is not None:
            say(f"mean wait {label}: {ratio:.4f}")
    for entry in beats_pooled(point):
        say(
            f"{entry['policy']} waits {entry['below_pooled_by']:.1%} less than pooled on "
            "average: pooled is a reference, not a bound (one queue blocks behind a large "
            "job where separate queues do not)"
        )


def human(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f}m"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"
