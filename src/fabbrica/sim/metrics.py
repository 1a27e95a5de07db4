"""What a run comes to: waits, completion times, slowdowns, utilisation, by job size."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from operator import add, attrgetter, mul, sub

from fabbrica.sim.engine import Run
from fabbrica.sim.trace import TraceJob

SLOWDOWN_FLOOR = 10.0  # seconds: bounded slowdown ignores shorter run times
SIZES = (("1", 1, 1), ("2-8", 2, 8), (">8", 9, None))


@dataclass(frozen=True, slots=True)
class Metrics:
    jobs: int
    mean_wait: float  # seconds from submission to start
    p50_wait: float
    p95_wait: float
    p99_wait: float
    max_wait: float
    mean_jct: float  # job completion time: wait + run time
    mean_bounded_slowdown: float  # (wait + run) / max(run, 10 s), at least 1

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Summary:
    overall: Metrics
    by_size: dict[str, Metrics]
    utilisation: float  # GPU-seconds used over GPU-seconds the federation had in the makespan
    makespan: float  # seconds from the first submission to the last end
    # node packing (`Run`): GPU-hours held beyond what jobs asked (whole nodes), and free
    # on partly used nodes while jobs waited (fragmentation)
    rounding_gpu_hours: float = 0.0
    fragmented_gpu_hours: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            **self.overall.as_dict(),
            "utilisation": self.utilisation,
            "makespan": self.makespan,
            "rounding_gpu_hours": self.rounding_gpu_hours,
            "fragmented_gpu_hours": self.fragmented_gpu_hours,
            "by_size": {name: m.as_dict() for name, m in self.by_size.items()},
        }


def summarise(jobs: Sequence[TraceJob], run: Run) -> Summary:
    # columns once (a replay has some 80,000 jobs per policy): the same arithmetic, per
    # job and in the same order, as on the jobs themselves
    if len(run.starts) != len(jobs):
        raise ValueError(f"{len(run.starts)} starts for {len(jobs)} jobs")
    submits = list(map(_SUBMIT, jobs))
    durations = list(map(_DURATION, jobs))
    sizes = list(map(_GPUS, jobs))
    waits = list(map(sub, run.starts, submits))
    first = min(submits, default=0.0)
    last = max(map(add, run.starts, durations), default=first)
    makespan = last - first
    used = sum(map(mul, sizes, durations))
    by_size = {}
    for name, low, high in SIZES:
        picked = [i for i, g in enumerate(sizes) if g >= low and (high is None or g <= high)]
        by_size[name] = _metrics([durations[i] for i in picked], [waits[i] for i in picked])
    return Summary(
        overall=_metrics(durations, waits),
        by_size=by_size,
        utilisation=used / (run.capacity * makespan) if run.capacity and makespan > 0 else 0.0,
        makespan=makespan,
        rounding_gpu_hours=run.rounding_gpu_hours,
        fragmented_gpu_hours=run.fragmented_gpu_hours,
    )


_SUBMIT, _DURATION, _GPUS = attrgetter("submit"), attrgetter("duration"), attrgetter("gpus")


def _metrics(durations: Sequence[float], waits: Sequence[float]) -> Metrics:
    """The metrics of jobs of these run times and waits."""
    count = len(waits)
    if not count:
        return Metrics(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    p50, p95, p99 = percentiles(waits, (50, 95, 99))
    jct = list(map(add, waits, durations))
    # max(t / max(d, floor), 1.0), without a call per job (max keeps its first argument
    # unless the second is larger)
    floor = SLOWDOWN_FLOOR
    ratios = [t / (floor if floor > d else d) for t, d in zip(jct, durations, strict=True)]
    slowdown = [1.0 if x < 1.0 else x for x in ratios]
    return Metrics(
        jobs=count,
        mean_wait=sum(waits) / count,
        p50_wait=p50,
        p95_wait=p95,
        p99_wait=p99,
        max_wait=max(waits),
        mean_jct=sum(jct) / count,
        mean_bounded_slowdown=sum(slowdown) / count,
    )


def percentiles(values: Sequence[float], which: Sequence[int]) -> list[float]:
    """Percentiles with linear interpolation between the closest ranks."""
    if len(values) == 1:
        return [float(values[0])] * len(which)
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return [cuts[p - 1] for p in which]
