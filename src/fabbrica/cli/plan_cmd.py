"""`fabbrica plan`: how many GPUs, of which model, at which factory, to meet a target."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from fabbrica.cli import sim_input as given
from fabbrica.cli.errors import BAD_INPUT, CliError
from fabbrica.cli.output import emit, print_table, say
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
from fabbrica.cli.sim_output import human as hms
from fabbrica.cli.sim_output import trace_json

BAR = 40  # characters of the longest bar


def plan(
    trace: TraceOpt,
    target_p95_wait: Annotated[
        str | None,
        typer.Option("--target-p95-wait", metavar="DURATION", help="The p95 wait to meet: 1h."),
    ] = None,
    target_mean_wait: Annotated[
        str | None,
        typer.Option("--target-mean-wait", metavar="DURATION", help="The mean wait to meet."),
    ] = None,
    target_utilisation: Annotated[
        str | None,
        typer.Option(
            "--target-utilisation",
            metavar="LOW-HIGH",
            help="A GPU utilisation band, e.g. 0.7-0.85: the fewest GPUs at or below HIGH.",
        ),
    ] = None,
    growth: Annotated[
        float, typer.Option("--growth", help="Demand x this (1.5: 50 % more).", min=0.01, max=100)
    ] = 1.0,
    at: Annotated[
        list[str] | None,
        typer.Option(
            "--at",
            metavar="FACTORY",
            help="A factory that could grow (with --catalog or --federation).",
        ),
    ] = None,
    new: Annotated[
        list[str] | None,
        typer.Option(
            "--new",
            metavar="ID:MODEL:COUNTRY",
            help="A new factory that could open (with --catalog or --federation).",
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="GPU model added at --at factories (default: theirs)."),
    ] = None,
    policy: Annotated[
        str, typer.Option("--policy", metavar="POLICY", help="The policy to size for.")
    ] = "federated",
    federation: FederationOpt = None,
    catalog: CatalogOpt = None,
    add_factory: AddFactoryOpt = None,
    grow: GrowOpt = None,
    tolerance: Annotated[
        float,
        typer.Option(
            "--tolerance", help="Stop when the size is known to this fraction.", min=0.0, max=0.5
        ),
    ] = 0.01,
    workers: Annotated[
        int, typer.Option("--workers", help="Simulations run at once, in processes.", min=1)
    ] = 1,
    dask: Annotated[
        str | None,
        typer.Option("--dask", metavar="ADDRESS", help="Run them on this Dask scheduler."),
    ] = None,
    limit_factor: LimitOpt = 1.0,
    queue_depth: DepthOpt = 500,
    json_out: JsonOpt = False,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", metavar="FILE", help="Draw the search to this .png/.svg/.pdf."),
    ] = None,
) -> None:
    """How many GPUs, of which model, at which factory, to meet a target for a demand.

    Exactly one target: `--target-p95-wait`, `--target-mean-wait` (`1h`, `30m`, ...) or
    `--target-utilisation LOW-HIGH`. The demand is the trace's times `--growth`. With
    `--catalog` or `--federation` (what-ifs `--add-factory`, `--grow` applied), each
    `--at FACTORY` (its own GPU model, or `--model`) and each `--new ID:MODEL:COUNTRY` is a
    candidate: the fewest GPUs added there, in whole nodes, that meet the target under
    `--policy` (default `federated`), to within `--tolerance` (1 %). Without candidates the
    whole federation is scaled (the default shares, or the file's proportions). Prints a
    table of the candidates, the best first, with a bar per candidate, and `--plot` draws
    every simulation of the search. `--workers N` runs up to N simulations at once, in
    processes, `--dask ADDRESS` on a Dask cluster (the `dask` extra); the answer does not
    depend on either. `--json`: `target`, `growth`, `base`, `answers[]`, `best`, `gpus`,
    `probes[]`, `steps`, `rounds`, `workers`, `wall_seconds`. Exit 1 when no candidate meets
    the target.
    """
    from fabbrica.sim import federation as fed
    from fabbrica.sim import study, whatif
    from fabbrica.sim.engine import POLICIES
    from fabbrica.sim.parallel import ClusterUnavailable, runner
    from fabbrica.sim.plan import Candidate, PlanError, file_sizer, grown
    from fabbrica.sim.plan import plan as search

    [chosen] = given.policies([policy], POLICIES)
    target = _target(target_p95_wait, target_mean_wait, target_utilisation)
    if plot is not None:
        given.check_plot_path(plot)
    sites, source = given.given_sites(federation, catalog, add_factory, grow)
    if sites is None and (at or new):
        raise CliError("--at and --new need a federation: add --catalog or --federation", BAD_INPUT)
    news = []
    for text in new or []:
        try:
            news.append(whatif.parse_new(text))
        except ValueError as exc:
            raise CliError(f"--new: {exc}", BAD_INPUT) from None
    if model is not None:
        try:
            model = whatif.check_model(model)
        except ValueError as exc:
            raise CliError(f"--model: {exc}", BAD_INPUT) from None
    began = time.perf_counter()
    data = given.load_trace(trace)
    jobs = grown(data.jobs, growth)
    with given.input_errors():
        base = None if sites is None else fed.assign(sites, jobs, source)
        candidates = _candidates(base, at or [], news, model)
        if base is not None:
            fed.check_fits(base, jobs, at_home=chosen.startswith("site-"))
        try:
            with runner(jobs, workers=workers, dask=dask) as pool:
                if candidates:
                    found = search(
                        jobs, pool, target=target, policy=chosen, candidates=candidates,
                        base=base, growth=growth, tolerance=tolerance,
                        limit_factor=limit_factor, queue_depth=queue_depth,
                        progress=given.progress,
                    )  # fmt: skip
                else:
                    sizer, start = (
                        (file_sizer(base, jobs), float(base.gpus))
                        if base is not None
                        else (_default_sizer(jobs), float(fed.sized_for_load(jobs, 1.0).gpus))
                    )
                    found = search(
                        jobs, pool, target=target, policy=chosen,
                        candidates=[Candidate("", "", 1)], sizer=sizer, start=start,
                        growth=growth, tolerance=tolerance, limit_factor=limit_factor,
                        queue_depth=queue_depth, progress=given.progress,
                    )  # fmt: skip
        except ClusterUnavailable as exc:
            raise CliError(str(exc), BAD_INPUT) from exc
        except PlanError as exc:
            raise CliError(str(exc)) from exc
    wall = time.perf_counter() - began
    note = study.attribution(data)
    if plot is not None:
        _plot(found, plot, note)
    best = found.best
    summary = {
        "trace": trace_json(data, len(jobs), 1),
        "federation_source": source or "sized from the trace",
        "policy": chosen,
        "target": {"metric": target.metric, "limit": target.limit, "floor": target.floor},
        "target_p95_wait": target.limit if target.metric == "p95_wait" else None,
        "growth": growth,
        "base": _probe_json(found.base, target) if found.base else None,
        "answers": [_answer_json(a, target) for a in found.answers],
        "best": _answer_json(best, target) if best else None,
        "gpus": best.probe.federation.gpus if best and best.probe else None,
        "federation": study.point_json(_point(best.probe))["federation"]
        if best and best.probe
        else None,
        "probes": [_probe_json(p, target) for p in found.probes],
        "steps": len(found.probes),
        "rounds": found.rounds,
        "workers": workers,
        "dask": dask,
        "wall_seconds": wall,
        "plot": str(plot) if plot else None,
        "attribution": note,
    }

    def human(_: Any) -> None:
        _print(found, data, len(jobs), source, wall, workers)
        if plot is not None:
            say(f"plot: {plot}")
        if note:
            say(note, style="dim")

    emit(summary, json_out, human)
    if best is None:
        raise CliError("no candidate meets the target", 1)


def _target(p95: str | None, mean: str | None, band: str | None) -> Any:
    from fabbrica.core.jobspec import parse_duration
    from fabbrica.sim.plan import Target

    given_ = [(n, v) for n, v in (("p95_wait", p95), ("mean_wait", mean), ("band", band)) if v]
    if len(given_) != 1:
        raise CliError(
            "give exactly one of --target-p95-wait, --target-mean-wait, --target-utilisation",
            BAD_INPUT,
        )
    [(name, text)] = given_
    assert text is not None
    if name != "band":
        option = f"--target-{name.replace('_', '-')}"
        try:
            return Target(name, float(parse_duration(text)))
        except ValueError as exc:
            raise CliError(f"{option}: {exc}", BAD_INPUT) from exc
    low, dash, high = text.partition("-")
    try:
        bottom, top = float(low), float(high)
    except ValueError:
        bottom = top = -1.0
    if not dash or not 0 <= bottom < top <= 1:
        raise CliError(
            f"--target-utilisation: {text!r} is not LOW-HIGH with 0 <= LOW < HIGH <= 1 "
            "(e.g. 0.7-0.85)",
            BAD_INPUT,
        )
    return Target("utilisation", top, bottom)


def _default_sizer(jobs: Any) -> Any:
    from fabbrica.sim.plan import default_sizer

    return default_sizer(jobs)


def _candidates(base: Any, at: list[str], news: list[Any], model: str | None) -> list[Any]:
    from fabbrica.sim.plan import Candidate

    found = []
    sites = {} if base is None else {s.id: s for s in base.sites}
    for factory in dict.fromkeys(at):
        site = sites.get(factory)
        if site is None:
            raise CliError(
                f"--at: no factory {factory!r} (factories: {', '.join(sorted(sites))})",
                BAD_INPUT,
            )
        found.append(Candidate(factory, model or site.gpu_model, site.gpus_per_node))
    for add in news:
        if add.id in sites:
            raise CliError(f"--new: factory {add.id!r} already exists", BAD_INPUT)
        found.append(Candidate(add.id, add.gpu_model, 4, add.country))
    return found


def _point(probe: Any) -> Any:
    from fabbrica.sim.study import Point

    return Point(None, probe.federation, 0.0)


def _probe_json(probe: Any, target: Any) -> dict[str, Any]:
    overall = probe.summary.overall
    return {
        "factory": probe.candidate.factory or None,
        "gpus_added": probe.amount if probe.candidate.factory else None,
        "federation_gpus": probe.federation.gpus,
        "value": target.value(probe.summary),
        "met": probe.met,
        "p95_wait": overall.p95_wait,
        "mean_wait": overall.mean_wait,
        "utilisation": probe.summary.utilisation,
    }


def _answer_json(answer: Any, target: Any) -> dict[str, Any]:
    candidate = answer.candidate
    return {
        "factory": candidate.factory or None,
        "new": bool(candidate.country),
        "country": candidate.country or None,
        "gpu_model": candidate.gpu_model or None,
        "met": answer.probe is not None,
        "known_to_miss_at": answer.low,
        **(_probe_json(answer.probe, target) if answer.probe else {}),
        "in_band": (
            target.floor <= answer.probe.summary.utilisation <= target.limit
            if answer.probe and target.metric == "utilisation"
            else None
        ),
    }


def _print(found: Any, data: Any, replayed: int, source: str, wall: float, workers: int) -> None:
    from fabbrica.cli.sim_output import print_trace

    print_trace(data, replayed, 1)
    target = found.target
    limit = (
        f"{target.floor:.0%}-{target.limit:.0%}"
        if target.metric == "utilisation"
        else hms(target.limit)
    )
    say(
        f"target: {target.metric} {limit} under {found.policy}, demand x{found.growth:g}; "
        f"federation: {source or 'sized from the trace'}"
    )
    if found.base is not None:
        say(
            f"today: {found.base.federation.gpus:,} GPUs, {target.metric} "
            f"{_value(found.base, target)}" + (" (meets the target)" if found.base.met else "")
        )
    answers = sorted(
        found.answers, key=lambda a: (a.probe is None, a.probe.amount if a.probe else 0)
    )
    whole = any(not a.candidate.factory for a in answers)
    print_table(
        "fewest GPUs meeting the target, per candidate",
        [
            ("where", lambda a: a.candidate.label),
            ("model", lambda a: a.candidate.gpu_model or "as the factories"),
            (
                "GPUs" if whole else "GPUs to add",
                lambda a: f"{a.probe.amount:,}" if a.probe else f"> {a.low:,}",
            ),
            ("federation GPUs", lambda a: f"{a.probe.federation.gpus:,}" if a.probe else "-"),
            ("p95 wait", lambda a: hms(a.probe.summary.overall.p95_wait) if a.probe else "-"),
            ("mean wait", lambda a: hms(a.probe.summary.overall.mean_wait) if a.probe else "-"),
            ("GPU util", lambda a: f"{a.probe.summary.utilisation:.0%}" if a.probe else "-"),
        ],
        answers,
    )
    top = max((a.probe.amount for a in answers if a.probe), default=0)
    for answer in answers:
        amount = answer.probe.amount if answer.probe else None
        bar = "#" * (round(BAR * amount / top) if amount and top else 0)
        say(
            f"{answer.candidate.label[:28]:<28} {bar} "
            + (f"{amount:,}" if amount is not None else "not met")
        )
    say(
        f"{len(found.probes)} simulations in {found.rounds} rounds, {workers} worker(s), "
        f"{wall:.1f} s"
    )


def _value(probe: Any, target: Any) -> str:
    value = target.value(probe.summary)
    return f"{value:.0%}" if target.metric == "utilisation" else hms(value)


def _plot(found: Any, path: Path, note: str | None) -> None:
    from fabbrica.sim.plan_plot import draw
    from fabbrica.sim.plot import PlotUnavailable

    try:
        draw(found, path, note)
    except PlotUnavailable as exc:
        raise CliError(str(exc), BAD_INPUT) from exc
    except OSError as exc:
        raise CliError(f"--plot: cannot write {path}: {exc.strerror or exc}") from exc
