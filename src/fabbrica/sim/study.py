"""A comparison: policies run on one trace and federation, at one or more loads."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fabbrica.sim import federation as fed
from fabbrica.sim.engine import QUEUE_DEPTH, Run, simulate
from fabbrica.sim.metrics import Summary, summarise
from fabbrica.sim.trace import Trace, TraceJob, shifted_copies

DEFAULT_LOAD = 0.9
SCALE_SPREAD = fed.WEEK  # --scale copies are spread over one week

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


def replay_jobs(trace: Trace, scale: int) -> tuple[TraceJob, ...]:
    return shifted_copies(trace, scale, SCALE_SPREAD)


def federation_for(
    trace: Trace, load: float | None, scale: int, federation_file: Path | None
) -> fed.Federation:
    """The federation one point runs on: sized for `load` on the original trace (or a file,
    rescaled to `load` when one is given), then `scale` times larger."""
    jobs = trace.jobs
    if federation_file is None:
        base = fed.sized_for_load(jobs, load if load is not None else DEFAULT_LOAD)
    else:
        base = fed.load_file(federation_file, jobs)
        if load is not None:
            base = base.scaled(
                fed.offered_load(jobs, base.gpus) / load, fed.largest_per_site(base, jobs)
            )
    return base.scaled(scale, {}) if scale > 1 else base


def run_point(
    jobs: Sequence[TraceJob],
    federation: fed.Federation,
    policies: Sequence[str],
    *,
    load: float | None,
    limit_factor: float,
    queue_depth: int = QUEUE_DEPTH,
    progress: Progress | None = None,
) -> Point:
    if any(p.startswith("site-") for p in policies):
        fed.check_fits(federation, jobs, at_home=True)
    fed.check_fits(federation, jobs, at_home=False)
    point = Point(load, federation, fed.offered_load(jobs, federation.gpus))
    for policy in policies:
        run = simulate(jobs, federation, policy, limit_factor=limit_factor, queue_depth=queue_depth)
        point.results[policy] = PolicyResult(run, summarise(jobs, run))
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
        }
    return {
        "load": point.load,
        "offered_load": point.offered_load,
        "federation": {
            "gpus": point.federation.gpus,
            "factories": [
                {"id": s.id, "gpus": s.gpus, "clusters": list(s.clusters)}
                for s in point.federation.sites
            ],
        },
        "policies": policies,
        "ratios": {
            "federated/site-backfill": point.ratio("federated", "site-backfill"),
            "federated/pooled": point.ratio("federated", "pooled"),
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
