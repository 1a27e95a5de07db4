"""`fabbrica simulate` and `fabbrica plan`: trace replays, run locally (no server)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from fabbrica.cli.errors import BAD_INPUT, CliError
from fabbrica.cli.output import emit, print_table, say
from fabbrica.cli.params import JsonOpt

PLOT_SUFFIXES = (".png", ".svg", ".pdf")

TraceOpt = Annotated[
    Path,
    typer.Option(
        "--trace",
        metavar="FILE",
        help="CSV with columns timestamp, duration, num_gpus, cluster.",
        show_default=False,
    ),
]
FederationOpt = Annotated[
    Path | None,
    typer.Option(
        "--federation",
        metavar="FILE",
        help="JSON or CSV of factories (id, gpus, optional country and clusters). "
        "Default: one factory per cluster of the trace, sized for --load.",
    ),
]
LimitOpt = Annotated[
    float,
    typer.Option(
        "--limit-factor",
        help="Time limit = run time x this, rounded up to the next hour.",
        min=1.0,
        max=100.0,
    ),
]
DepthOpt = Annotated[
    int,
    typer.Option(
        "--queue-depth",
        help="Jobs each scheduling pass looks at, in priority order (as Slurm's "
        "bf_max_job_test); 0: the whole queue.",
        min=0,
        max=1_000_000,
    ),
]


def simulate(
    trace: TraceOpt,
    federation: FederationOpt = None,
    load: Annotated[
        str | None,
        typer.Option(
            "--load",
            metavar="X[,Y...]",
            help="Offered load of the busiest 7-day window; a list such as 0.9,1.0,1.2 runs "
            "a sweep. Default 0.9 (with --federation: the file's sizes as given).",
        ),
    ] = None,
    scale: Annotated[
        int,
        typer.Option(
            "--scale",
            help="Replay K copies over the trace's own span (shifted by under an hour) on a "
            "federation sized for them: K times the work at the same load.",
            min=1,
            max=100,
        ),
    ] = 1,
    copies: Annotated[
        int,
        typer.Option(
            "--copies",
            help="Throughput benchmark: K copies spread over one week on K times the GPUs "
            "(the load falls).",
            min=1,
            max=100,
        ),
    ] = 1,
    outage: Annotated[
        list[str] | None,
        typer.Option(
            "--outage",
            metavar="FACTORY@START+DURATION",
            help="A factory down from START for DURATION after the trace's first submission "
            "(hours as a number, or 90m, 36h, 1d12h, P1DT12H); repeat for several.",
        ),
    ] = None,
    policy: Annotated[
        list[str] | None,
        typer.Option(
            "--policy",
            metavar="POLICY",
            help="site-fifo, site-backfill, naive, federated, federated-single or pooled; "
            "repeat for several. Default: all six.",
        ),
    ] = None,
    limit_factor: LimitOpt = 1.0,
    queue_depth: DepthOpt = 500,
    json_out: JsonOpt = False,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot", metavar="FILE", help="Draw wait-time CDFs per policy to this .png/.svg/.pdf."
        ),
    ] = None,
) -> None:
    """Replay a GPU-cluster trace through the placement core under several policies.

    Replays a trace (CSV columns `timestamp, duration, num_gpus, cluster`) through the
    placement core under `site-fifo`, `site-backfill`, `naive`, `federated`, `federated-single`
    and `pooled` (all six unless `--policy` is repeated). Without `--federation`, each virtual
    cluster is a home factory and the federation is sized so that the busiest 7-day window's
    offered load is `--load` (default 0.9); a list such as `--load 0.9,1.0,1.2` runs a sweep.
    With `--federation`, the file's sizes are used as given, or rescaled to `--load` when it is
    given. `--scale K` replays K copies of the trace over its own span (copy k shifted by k/K
    of an hour) on a federation sized for them, so the offered load stays `--load`; `--copies
    K` replays K copies spread over one week on K times the GPUs (a throughput benchmark: the
    load falls). `--outage FACTORY@START+DURATION` (repeatable) takes a factory down: its
    running jobs are lost after the 60 s lease and queued again, and the report adds what the
    outage cost (runs requeued, GPU-hours lost, mean and p95 wait against the same run without
    the outage). Time limits are the run time x `--limit-factor` (default 1), rounded up to
    the next hour.

    Prints per policy: jobs, mean / p50 / p95 / p99 / max wait, mean job completion time, mean
    bounded slowdown (run time floor 10 s), GPU utilisation and makespan, the same by job size
    (1, 2-8, more than 8 GPUs), the ratios `federated / site-backfill`, `federated / pooled`
    and `federated / naive` of mean waits, any policy that beats `pooled` and by how much,
    the wall time and the events per second. Progress goes to stderr. `--json` prints all of
    it (`trace`, `outages`, `points[]` with `offered_load`, `federation`, `policies.<name>`
    metrics, `by_size` and `outage`, `ratios`, `beats_pooled`, then `wall_seconds`, `events`,
    `events_per_second`, `attribution`). `--plot` draws the wait-time CDFs per policy (needs
    the `plot` extra: matplotlib). Rows that cannot be used are skipped and counted by kind
    (`missing_value`, `bad_timestamp`, `bad_duration`, `negative_duration`, `bad_num_gpus`,
    `non_positive_gpus`); unsorted rows are sorted and
    counted; a missing column or a trace with no usable row exits 2.
    """
    from fabbrica.sim import study
    from fabbrica.sim.engine import POLICIES

    policies = _policies(policy, POLICIES)
    loads = _loads(load)
    outages = _outages(outage or [])
    if scale > 1 and copies > 1:
        raise CliError("--scale and --copies do not go together; choose one", BAD_INPUT)
    if plot is not None:
        _check_plot_path(plot)
    began = time.perf_counter()
    data = _load_trace(trace)
    jobs = study.replay_jobs(data, scale, copies)
    points = []
    for value in loads:
        with _input_errors():
            base = study.federation_for(data, value, scale, federation, copies, jobs)
            points.append(
                study.run_point(
                    jobs,
                    base,
                    policies,
                    load=value,
                    limit_factor=limit_factor,
                    queue_depth=queue_depth,
                    outages=outages,
                    progress=_progress,
                )
            )
    wall = time.perf_counter() - began
    events = sum(r.run.events for p in points for r in p.results.values())
    sim_seconds = sum(r.run.wall_seconds for p in points for r in p.results.values())
    note = study.attribution(data)
    if plot is not None:
        _plot(jobs, points, plot, note)
    summary = {
        "trace": _trace_json(data, len(jobs), scale, copies),
        "outages": [
            {"factory": o.factory, "start": o.start, "duration": o.duration} for o in outages
        ],
        "limit_factor": limit_factor,
        "queue_depth": queue_depth,
        "points": [study.point_json(p) for p in points],
        "wall_seconds": wall,
        "events": events,
        "events_per_second": events / sim_seconds if sim_seconds else None,
        "plot": str(plot) if plot else None,
        "attribution": note,
    }

    def human(_: Any) -> None:
        _print_trace(data, len(jobs), scale, copies)
        for point in points:
            _print_point(point)
        say(
            f"wall time {wall:.1f} s; {events:,} events replayed at "
            f"{events / sim_seconds:,.0f} events/s"
            if sim_seconds
            else f"wall time {wall:.1f} s"
        )
        if plot is not None:
            say(f"plot: {plot}")
        if note:
            say(note, style="dim")

    emit(summary, json_out, human)


def plan(
    trace: TraceOpt,
    target_p95_wait: Annotated[
        str,
        typer.Option(
            "--target-p95-wait",
            metavar="DURATION",
            help="The p95 wait to meet, e.g. 1h, 30m.",
            show_default=False,
        ),
    ],
    policy: Annotated[
        str, typer.Option("--policy", metavar="POLICY", help="The policy to size for.")
    ] = "federated",
    federation: FederationOpt = None,
    tolerance: Annotated[
        float,
        typer.Option(
            "--tolerance", help="Stop when the size is known to this fraction.", min=0.0, max=0.5
        ),
    ] = 0.01,
    limit_factor: LimitOpt = 1.0,
    queue_depth: DepthOpt = 500,
    json_out: JsonOpt = False,
) -> None:
    """The smallest federation (in GPUs, from the default shares) meeting a p95 wait.

    Finds by bisection the smallest federation (in GPUs, scaled from the default shares, or
    from `--federation`'s proportions; each factory at least its largest home job) whose p95
    wait under `--policy` (default `federated`) is at most the target (`1h`, `30m`, ...), to
    within `--tolerance` (default 1 %) of its size, and prints it with its metrics. Exit 1 when
    no size up to 2^20 times the start meets the target.
    """
    from fabbrica.core.jobspec import parse_duration
    from fabbrica.sim import federation as fed
    from fabbrica.sim import study
    from fabbrica.sim.engine import POLICIES
    from fabbrica.sim.plan import PlanError, default_sizer, file_sizer
    from fabbrica.sim.plan import plan as search

    [chosen] = _policies([policy], POLICIES)
    try:
        target = float(parse_duration(target_p95_wait))
    except ValueError as exc:
        raise CliError(f"--target-p95-wait: {exc}", BAD_INPUT) from exc
    began = time.perf_counter()
    data = _load_trace(trace)
    with _input_errors():
        if federation:
            base = fed.load_file(federation, data.jobs)
            sizer, start = file_sizer(base, data.jobs), float(base.gpus)
        else:
            sizer, start = default_sizer(data.jobs), float(fed.sized_for_load(data.jobs, 1.0).gpus)
        try:
            found = search(
                data.jobs,
                sizer,
                start=start,
                policy=chosen,
                target_p95_wait=target,
                tolerance=tolerance,
                limit_factor=limit_factor,
                queue_depth=queue_depth,
                progress=_progress,
            )
        except PlanError as exc:
            raise CliError(str(exc)) from exc
    wall = time.perf_counter() - began
    point = found.point
    note = study.attribution(data)
    summary = {
        "trace": _trace_json(data, len(data.jobs), 1),
        "policy": chosen,
        "target_p95_wait": target,
        "gpus": point.federation.gpus,
        "steps": found.steps,
        "wall_seconds": wall,
        "point": study.point_json(point),
        "attribution": note,
    }

    def human(_: Any) -> None:
        _print_trace(data, len(data.jobs), 1)
        say(
            f"{point.federation.gpus:,} GPUs meet a p95 wait of {_human(target)} "
            f"under {chosen} (offered load {point.offered_load:.2f}; {found.steps} "
            f"simulations, {wall:.1f} s)",
            style="bold",
        )
        _print_point(point)
        if note:
            say(note, style="dim")

    emit(summary, json_out, human)


# --- input -------------------------------------------------------------------------------


def _policies(given: list[str] | None, known: tuple[str, ...]) -> list[str]:
    chosen = list(dict.fromkeys(given or known))
    unknown = [p for p in chosen if p not in known]
    if unknown:
        raise CliError(
            f"--policy: unknown {', '.join(unknown)}; choose from {', '.join(known)}", BAD_INPUT
        )
    return chosen


def _loads(text: str | None) -> list[float | None]:
    if text is None:
        return [None]
    values: list[float | None] = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise CliError(f"--load: {part.strip()!r} is not a number", BAD_INPUT) from None
        if not 0 < value <= 100:
            raise CliError(f"--load: {value} is not in (0, 100]", BAD_INPUT)
        values.append(value)
    return values


def _outages(texts: list[str]) -> list[Any]:
    from fabbrica.sim.outage import parse

    found = []
    for text in texts:
        try:
            found.append(parse(text))
        except ValueError as exc:
            raise CliError(f"--outage: {exc}", BAD_INPUT) from None
    return found


def _check_plot_path(path: Path) -> None:
    if path.suffix.lower() not in PLOT_SUFFIXES:
        raise CliError(f"--plot: the file must end in {', '.join(PLOT_SUFFIXES)}", BAD_INPUT)
    if not path.parent.resolve().is_dir():
        raise CliError(f"--plot: directory {path.parent} does not exist", BAD_INPUT)


def _load_trace(path: Path) -> Any:
    from fabbrica.sim.trace import TraceError, load

    try:
        return load(path)
    except TraceError as exc:
        raise CliError(str(exc), BAD_INPUT) from exc


@contextmanager
def _input_errors() -> Iterator[None]:
    """Federation problems are bad input (exit 2)."""
    from fabbrica.sim.federation import FederationError

    try:
        yield
    except FederationError as exc:
        raise CliError(str(exc), BAD_INPUT) from exc


def _progress(message: str) -> None:
    say(message, style="dim", err=True)


def _plot(jobs: Any, points: list[Any], path: Path, note: str | None) -> None:
    from fabbrica.sim.plot import PlotUnavailable, wait_cdfs

    try:
        wait_cdfs(jobs, points, path, note)
    except PlotUnavailable as exc:
        raise CliError(str(exc), BAD_INPUT) from exc
    except OSError as exc:
        raise CliError(f"--plot: cannot write {path}: {exc.strerror or exc}") from exc


# --- output ------------------------------------------------------------------------------


def _trace_json(data: Any, replayed: int, scale: int, copies: int = 1) -> dict[str, Any]:
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


def _print_trace(data: Any, replayed: int, scale: int, copies: int = 1) -> None:
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


def _print_point(point: Any) -> None:
    from fabbrica.sim.study import beats_pooled

    title = (
        f"{point.federation.gpus:,} GPUs in {len(point.federation.sites)} factories, "
        f"offered load {point.offered_load:.2f}"
    )
    results = point.results.items()
    print_table(
        f"{title}: waits",
        [
            ("policy", lambda r: r[0]),
            ("mean", lambda r: _human(r[1].summary.overall.mean_wait)),
            ("p50", lambda r: _human(r[1].summary.overall.p50_wait)),
            ("p95", lambda r: _human(r[1].summary.overall.p95_wait)),
            ("p99", lambda r: _human(r[1].summary.overall.p99_wait)),
            ("mean JCT", lambda r: _human(r[1].summary.overall.mean_jct)),
            ("slowdown", lambda r: f"{r[1].summary.overall.mean_bounded_slowdown:,.1f}"),
            ("GPU util", lambda r: f"{r[1].summary.utilisation:.0%}"),
            ("makespan", lambda r: _human(r[1].summary.makespan)),
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
            ("mean wait", lambda r: _human(r[2].mean_wait)),
            ("p95 wait", lambda r: _human(r[2].p95_wait)),
            ("max wait", lambda r: _human(r[2].max_wait)),
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
                ("mean wait", lambda r: _human(r[1].summary.overall.mean_wait)),
                ("without outage", lambda r: _human(r[1].without_outage.overall.mean_wait)),
                ("p95 wait", lambda r: _human(r[1].summary.overall.p95_wait)),
                ("without outage ", lambda r: _human(r[1].without_outage.overall.p95_wait)),
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


def _human(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f}m"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"
