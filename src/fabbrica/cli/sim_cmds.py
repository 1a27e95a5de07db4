"""`fabbrica simulate` and `fabbrica plan`: trace replays, run locally (no server)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from fabbrica.cli import sim_input as given
from fabbrica.cli import sim_output as out
from fabbrica.cli.errors import BAD_INPUT, CliError
from fabbrica.cli.output import emit, say
from fabbrica.cli.params import JsonOpt
from fabbrica.cli.sim_input import (
    AddFactoryOpt,
    CatalogOpt,
    DepthOpt,
    FederationOpt,
    GrowOpt,
    LimitOpt,
    TraceOpt,
)


def simulate(
    trace: TraceOpt,
    federation: FederationOpt = None,
    catalog: CatalogOpt = None,
    add_factory: AddFactoryOpt = None,
    grow: GrowOpt = None,
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

    Replays a trace (CSV columns `timestamp, duration, num_gpus, cluster`) through the placement
    core under `site-fifo`, `site-backfill`, `naive`, `federated`, `federated-single` and
    `pooled` (all six unless `--policy` is repeated). Without `--federation`, each virtual
    cluster is a home factory and the federation is sized so that the busiest 7-day window's
    offered load is `--load` (default 0.9); a list such as `--load 0.9,1.0,1.2` runs a sweep.
    With `--federation`, the file's sizes are used as given, or rescaled to `--load` when it is
    given; `--catalog [FILE]` does the same with the catalog's factories, partitions and sizes
    (the shipped catalog without FILE; an unpublished size is an estimate, marked `≈`, as are
    the catalog's uncertain ones), the trace's clusters homed by demand (the largest to the
    factory with the least demand per GPU). What-ifs on either: `--add-factory
    ID:GPUS:MODEL:COUNTRY` and `--grow ID=FACTOR` (repeatable). `--scale K` replays K copies of
    the trace over its own span (copy k shifted by k/K of an hour) on a federation sized for
    them, so the offered load stays `--load`; `--copies K` replays K copies spread over one week
    on K times the GPUs (a throughput benchmark: the load falls). `--outage
    FACTORY@START+DURATION` (repeatable) takes a factory down: its running jobs are lost after
    the 60 s lease and queued again, and the report adds what the outage cost (runs requeued,
    GPU-hours lost, mean and p95 wait against the same run without the outage). Time limits are
    the run time x `--limit-factor` (default 1), rounded up to the next hour.

    Prints per policy: jobs, mean / p50 / p95 / p99 / max wait, mean job completion time, mean
    bounded slowdown (run time floor 10 s), GPU utilisation and makespan, the same by job size
    (1, 2-8, more than 8 GPUs), the ratios `federated / site-backfill`, `federated / pooled` and
    `federated / naive` of mean waits, any policy that beats `pooled` and by how much, the wall
    time and the events per second. Progress goes to stderr. `--json` prints all of it (`trace`,
    `federation_source`, `outages`, `points[]` with `offered_load`, `federation` (`factories[]`
    with `gpus`, `gpu_model`, `estimated`, `basis`; `estimated` ids), `policies.<name>` metrics,
    `by_size` and `outage`, `ratios`, `beats_pooled`, then `wall_seconds`, `events`,
    `events_per_second`, `attribution`). `--plot` draws the wait-time CDFs per policy (needs the
    `plot` extra: matplotlib). Rows that cannot be used are skipped and counted by kind
    (`missing_value`, `bad_timestamp`, `bad_duration`, `negative_duration`, `bad_num_gpus`,
    `non_positive_gpus`); unsorted rows are sorted and counted; a missing column or a trace with
    no usable row exits 2.
    """
    from fabbrica.sim import study
    from fabbrica.sim.engine import POLICIES

    policies = given.policies(policy, POLICIES)
    loads = given.loads(load)
    outages = given.outages(outage or [])
    if scale > 1 and copies > 1:
        raise CliError("--scale and --copies do not go together; choose one", BAD_INPUT)
    if plot is not None:
        given.check_plot_path(plot)
    sites, source = given.given_sites(federation, catalog, add_factory, grow)
    began = time.perf_counter()
    data = given.load_trace(trace)
    jobs = study.replay_jobs(data, scale, copies)
    points = []
    for value in loads:
        with given.input_errors():
            base = study.federation_for(data, value, scale, sites, copies, jobs, source)
            points.append(
                study.run_point(
                    jobs,
                    base,
                    policies,
                    load=value,
                    limit_factor=limit_factor,
                    queue_depth=queue_depth,
                    outages=outages,
                    progress=given.progress,
                )
            )
    wall = time.perf_counter() - began
    events = sum(r.run.events for p in points for r in p.results.values())
    sim_seconds = sum(r.run.wall_seconds for p in points for r in p.results.values())
    note = study.attribution(data)
    if plot is not None:
        out.plot(jobs, points, plot, note)
    summary = {
        "trace": out.trace_json(data, len(jobs), scale, copies),
        "federation_source": source or "sized from the trace",
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
        out.print_trace(data, len(jobs), scale, copies)
        if source:
            say(f"federation: {source}")
        for point in points:
            out.print_point(point, factories=bool(source))
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
