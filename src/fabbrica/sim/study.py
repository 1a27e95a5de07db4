"""A comparison: policies run on one trace and federation, at one or more loads."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fabbrica.sim import federation as fed
from fabbrica.sim.engine import QUEUE_DEPTH, Outage, Run, simulate
from fabbrica.sim.metrics import Summary, summarise
from fabbrica.sim.trace import Trace, TraceJob, shifted_copies

DEFAULT_LOAD = 0.9
COPIES_SPREAD = fed.WEEK  # --copies: the copies are spread over one week
SCALE_SPREAD = 3600.0  # --scale: the copies are shifted by less than an hour

PHILLY_ATTRIBUTION = (
    "Philly trace: Microsoft Research, msr-fiddle/philly-traces (CC-BY 4.0); Jeon et al., "
    '"Analysis of Large-Scale Multi-Tenant GPU Clusters for DNN Training Workloads", '
    "USENIX ATC 2019; as processed by the Pollux artifact (petuum/adaptdl, Apache-2.0)."
)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class PolicyResult:
    run: Run
    summary: Summary
    without_outage: Summary | None = None  # the same run with no outage, when there was one

    def outage_json(self) -> dict[str, object] | None:
        """What the outages cost: runs lost and requeued, GPU-hours lost, extra wait."""
        base = self.without_outage
        if base is None:
            return None
        now, before = self.summary.overall, base.overall
        return {
            "requeued_runs": self.run.requeued,
            "lost_gpu_hours": self.run.lost_gpu_hours,
            "mean_wait": now.mean_wait,
            "mean_wait_without_outage": before.mean_wait,
            "extra_mean_wait": now.mean_wait - before.mean_wait,
            "p95_wait": now.p95_wait,
            "p95_wait_without_outage": before.p95_wait,
        }


@dataclass
class Point:
    """All policies at one load."""

    load: float | None  # None: a federation file used as given
    federation: fed.Federation
    offered_load: float
    results: dict[str, PolicyResult] = field(default_factory=dict)

    def ratio(self, policy: str, reference: str) -> float | None:
        a, b = self.results.get(policy), self.results.get(reference)
        if a is None or b is None or b.summary.overall.mean_wait <= 0:
            return None
        return a.summary.overall.mean_wait / b.summary.overall.mean_wait


def attribution(trace: Trace) -> str | None:
    """The attribution owed for figures derived from a trace, when it is a known one."""
    return PHILLY_ATTRIBUTION if "philly" in Path(trace.source).name.lower() else None


def replay_jobs(trace: Trace, scale: int = 1, copies: int = 1) -> tuple[TraceJob, ...]:
    """The jobs replayed: `scale` copies over the trace's own span (copy k shifted by
    k/scale of an hour, so the busiest week holds `scale` times the work), or `copies`
    copies spread over one week (the old `--scale`, a throughput benchmark)."""
    if scale > 1 and copies > 1:
        raise fed.FederationError("--scale and --copies do not go together")
    if copies > 1:
        return shifted_copies(trace, copies, COPIES_SPREAD)
    return shifted_copies(trace, scale, SCALE_SPREAD)


def federation_for(
    trace: Trace,
    load: float | None,
    scale: int,
    given: Sequence[fed.Site] | None,
    copies: int = 1,
    jobs: Sequence[TraceJob] | None = None,
    source: str = "federation",
) -> fed.Federation:
    """The federation one point runs on. `given`: the factories of a federation file or
    of the catalog (what-ifs applied), else one factory per cluster sized for `load`.
    With `scale`, sized for `load` on the replayed jobs (`jobs`: `scale` superposed
    copies), so the offered load is `load`; given factories are rescaled to `load` when
    one is given, else their sizes times `scale`. With `copies`, sized on the original
    trace, then `copies` times larger."""
    replayed = trace.jobs if jobs is None or copies > 1 else jobs
    if given is None:
        base = fed.sized_for_load(replayed, load if load is not None else DEFAULT_LOAD)
    else:
        base = fed.assign(given, replayed, source)
        if load is not None:
            base = base.resized(
                fed.busiest_week(replayed)[1] / (load * fed.WEEK / 3600.0),
                fed.largest_per_site(base, replayed),
            )
        elif scale > 1:
            base = base.scaled(scale, {})
    return base.scaled(copies, {}) if copies > 1 else base


def run_point(
    jobs: Sequence[TraceJob],
    federation: fed.Federation,
    policies: Sequence[str],
    *,
    load: float | None,
    limit_factor: float,
    queue_depth: int = QUEUE_DEPTH,
    outages: Sequence[Outage] = (),
    progress: Progress | None = None,
) -> Point:
    if any(p.startswith("site-") for p in policies):
        fed.check_fits(federation, jobs, at_home=True)
    fed.check_fits(federation, jobs, at_home=False)
    known = {s.id for s in federation.sites}
    for outage in outages:
        if outage.factory not in known:
            raise fed.FederationError(
                f"--outage: no factory {outage.factory!r} (factories: {', '.join(sorted(known))})"
            )
    point = Point(load, federation, fed.offered_load(jobs, federation.gpus))
    for policy in policies:
        run = simulate(
            jobs,
            federation,
            policy,
            limit_factor=limit_factor,
            queue_depth=queue_depth,
            outages=outages,
        )
        base = None
        if outages:
            plain = simulate(
                jobs, federation, policy, limit_factor=limit_factor, queue_depth=queue_depth
            )
            base = summarise(jobs, plain)
        point.results[policy] = PolicyResult(run, summarise(jobs, run), base)
        if progress:
            progress(
                f"{policy} at load {point.offered_load:.2f}: {run.wall_seconds:.1f} s, "
                f"{run.events / run.wall_seconds:,.0f} events/s"
            )
    return point


def point_json(point: Point) -> dict[str, object]:
    policies = {}
    for name, result in point.results.items():
        run = result.run
        policies[name] = {
            **result.summary.as_dict(),
            "wall_seconds": run.wall_seconds,
            "events": run.events,
            "passes": run.passes,
            "events_per_second": run.events / run.wall_seconds if run.wall_seconds else None,
            "outage": result.outage_json(),
        }
    return {
        "load": point.load,
        "offered_load": point.offered_load,
        "federation": {
            "gpus": point.federation.gpus,
            "estimated": [s.id for s in point.federation.sites if s.estimated],
            "factories": [
                {
                    "id": s.id,
                    "gpus": s.gpus,
                    "clusters": list(s.clusters),
                    "country": s.country,
                    "gpu_model": s.gpu_model,
                    "gpus_per_node": s.gpus_per_node,
                    "estimated": s.estimated,
                    "basis": s.basis,
                    "given_gpus": s.given_gpus or s.gpus,
                }
                for s in point.federation.sites
            ],
        },
        "policies": policies,
        "ratios": {
            "federated/site-backfill": point.ratio("federated", "site-backfill"),
            "federated/pooled": point.ratio("federated", "pooled"),
            "federated/naive": point.ratio("federated", "naive"),
        },
        "beats_pooled": beats_pooled(point),
    }


def beats_pooled(point: Point) -> list[dict[str, object]]:
    """Policies whose mean wait is below `pooled`'s, and by how much (pooled is a
    reference, not a bound: one queue can block behind a large job where sites do not)."""
    pooled = point.results.get("pooled")
    if pooled is None:
        return []
    reference = pooled.summary.overall.mean_wait
    found = []
    for name, result in point.results.items():
        mean = result.summary.overall.mean_wait
        if name != "pooled" and mean < reference:
            found.append(
                {
                    "policy": name,
                    "mean_wait": mean,
                    "pooled_mean_wait": reference,
                    "below_pooled_by": (reference - mean) / reference if reference else 0.0,
                }
            )
    return found
