"""The factories a trace is replayed on: sized from the trace, or read from a file.

Default sizing: each virtual cluster of the trace is a home factory. The federation's
GPUs are chosen so that the offered load of the trace's busiest 7-day window (GPU-hours of
the jobs arriving in it, over the GPU-hours the federation has in 7 days) is `load`; each
factory's share is proportional to its home demand over the whole trace, and never smaller
than its largest job.

A federation file is JSON, `{"factories": [{"id": "it4lia", "gpus": 512, "country": "IT",
"clusters": ["6214e9"]}, ...]}`, or CSV with the columns `id, gpus` and optionally
`country` and `clusters` (separated by `;`). Clusters a file does not name are given, the
largest demand first, to the factory with the least demand per GPU so far.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fabbrica.sim.trace import TraceJob

WEEK = 7 * 86400.0


class FederationError(ValueError):
    """A federation file that cannot be used, or a federation too small for the trace."""


DEFAULT_MODEL = "gpu"  # the GPU model of a factory nobody named one for
DEFAULT_GPUS_PER_NODE = 8


@dataclass(frozen=True, slots=True)
class Site:
    """A factory as replayed. `gpu_model`, `gpus_per_node`, `estimated` and `basis` come
    from the catalog or a what-if (`fabbrica.sim.whatif`); `node_shape` hands them to the
    engine."""

    id: str
    gpus: int
    clusters: tuple[str, ...]
    country: str = ""
    gpu_model: str = DEFAULT_MODEL
    gpus_per_node: int = DEFAULT_GPUS_PER_NODE
    estimated: bool = False  # the size is an estimate (catalog `uncertain`, or unpublished)
    basis: str = "sized from the trace"  # where the size comes from, as printed
    given_gpus: int = 0  # the size before any rescaling to a load (0: not rescaled)


def node_shape(site: Site) -> tuple[str, int]:
    """(GPU model, GPUs per node) of a factory: the one place the simulator's factory
    description becomes the scheduler's partition fields."""
    return site.gpu_model, site.gpus_per_node


@dataclass(frozen=True)
class Federation:
    sites: tuple[Site, ...]

    @property
    def gpus(self) -> int:
        return sum(s.gpus for s in self.sites)

    def home(self) -> dict[str, str]:
        """cluster -> factory id"""
        return {c: s.id for s in self.sites for c in s.clusters}

    def scaled(self, factor: float, minimum: dict[str, int]) -> Federation:
        """Every factory times `factor` (rounded), never below its largest home job."""
        return Federation(
            tuple(
                replace(
                    s,
                    gpus=max(round(s.gpus * factor), minimum.get(s.id, 1), 1),
                    given_gpus=s.given_gpus or s.gpus,
                )
                for s in self.sites
            )
        )

    def resized(self, total: float, minimum: dict[str, int]) -> Federation:
        """`total` GPUs shared in proportion to the factories' sizes, each at least its
        largest home job (and 1): `proportional_shares`, so the floors do not add up."""
        shares = proportional_shares(total, {s.id: float(s.gpus) for s in self.sites}, minimum)
        return Federation(
            tuple(
                replace(s, gpus=shares[s.id], given_gpus=s.given_gpus or s.gpus) for s in self.sites
            )
        )


def demand(jobs: Iterable[TraceJob]) -> dict[str, float]:
    """GPU-hours asked for per cluster."""
    totals: dict[str, float] = defaultdict(float)
    for job in jobs:
        totals[job.cluster] += job.gpus * job.duration / 3600.0
    return dict(totals)


def largest_job(jobs: Iterable[TraceJob]) -> dict[str, int]:
    sizes: dict[str, int] = defaultdict(int)
    for job in jobs:
        sizes[job.cluster] = max(sizes[job.cluster], job.gpus)
    return dict(sizes)


def largest_per_site(federation: Federation, jobs: Iterable[TraceJob]) -> dict[str, int]:
    """factory id -> the largest job homed there"""
    home = federation.home()
    found: dict[str, int] = {}
    for cluster, gpus in largest_job(jobs).items():
        found[home[cluster]] = max(found.get(home[cluster], 0), gpus)
    return found


def busiest_week(jobs: Sequence[TraceJob]) -> tuple[float, float]:
    """(start, GPU-hours) of the 7-day window of arrivals that asks for the most work.
    `jobs` are in submission order."""
    best_start, best, total, tail = 0.0, 0.0, 0.0, 0
    for job in jobs:
        total += job.gpus * job.duration / 3600.0
        while jobs[tail].submit <= job.submit - WEEK:
            total -= jobs[tail].gpus * jobs[tail].duration / 3600.0
            tail += 1
        if total > best:
            best, best_start = total, jobs[tail].submit
    return best_start, best


def offered_load(jobs: Sequence[TraceJob], gpus: int) -> float:
    """The busiest week's GPU-hours over what `gpus` GPUs give in a week."""
    return busiest_week(jobs)[1] / (gpus * WEEK / 3600.0) if gpus else math.inf


def sized_for_load(jobs: Sequence[TraceJob], load: float) -> Federation:
    """One factory per cluster, sized as the module docstring says."""
    if load <= 0:
        raise FederationError(f"load must be above 0, got {load}")
    return sized_total(jobs, busiest_week(jobs)[1] / (load * WEEK / 3600.0))


def sized_total(jobs: Sequence[TraceJob], wanted: float) -> Federation:
    """One factory per cluster, `wanted` GPUs in all, shared by home demand."""
    shares = proportional_shares(wanted, demand(jobs), largest_job(jobs))
    order = sorted(shares, key=lambda c: (-shares[c], c))
    return Federation(tuple(Site(c, shares[c], (c,), c) for c in order))


def proportional_shares(
    total: float, weights: dict[str, float], floors: dict[str, int]
) -> dict[str, int]:
    """`total` GPUs split in proportion to `weights`, each share at least its floor (and 1):
    the factories held at their floor are set aside and the rest is split again, so that
    the floors do not add to the total when it is large enough to hold them."""
    fixed: dict[str, int] = {}
    while True:
        free = [k for k in weights if k not in fixed]
        left = total - sum(fixed.values())
        weight = sum(weights[k] for k in free) or 1.0
        raw = {k: left * weights[k] / weight for k in free}
        low = {k for k in free if raw[k] < max(floors.get(k, 1), 1)}
        if not low:
            break
        fixed.update({k: max(floors.get(k, 1), 1) for k in low})
    return {**fixed, **{k: max(round(v), 1) for k, v in raw.items()}}


class _SiteFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=64)
    gpus: int = Field(ge=1, le=10_000_000)
    country: str = Field(default="", max_length=64)
    clusters: list[str] = Field(default_factory=list)


class _FederationFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    factories: list[_SiteFile] = Field(min_length=1)


def load_file(path: Path, jobs: Sequence[TraceJob]) -> Federation:
    """Read a federation file and give the trace's clusters their home factories."""
    return assign(read_file(path), jobs, f"federation file {path}")


def read_file(path: Path) -> list[Site]:
    """The factories of a federation file, with only the clusters it names."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FederationError(f"cannot read federation file {path}: {exc}") from exc
    try:
        if path.suffix.lower() == ".csv":
            raw: object = {"factories": _csv_rows(text)}
        else:
            raw = json.loads(text)
        parsed = _FederationFile.model_validate(raw)
    except json.JSONDecodeError as exc:
        raise FederationError(
            f"federation file {path}: not JSON ({exc.msg}, line {exc.lineno})"
        ) from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise FederationError(f"federation file {path}: field '{where}': {first['msg']}") from exc
    ids = [s.id for s in parsed.factories]
    if len(set(ids)) != len(ids):
        raise FederationError(f"federation file {path}: factory ids repeat")
    return [
        Site(e.id, e.gpus, tuple(e.clusters), e.country or e.id, basis=f"given in {path.name}")
        for e in parsed.factories
    ]


def _csv_rows(text: str) -> list[dict[str, object]]:
    rows = []
    for raw in csv.DictReader(text.splitlines()):
        row = {k.strip(): (v or "").strip() for k, v in raw.items() if k}
        clusters = [c.strip() for c in row.pop("clusters", "").split(";") if c.strip()]
        rows.append({**row, "clusters": clusters})
    return rows


def assign(entries: Sequence[Site], jobs: Sequence[TraceJob], source: str) -> Federation:
    """The factories with the trace's clusters as home demand: clusters an entry names stay
    there; the others go, the largest demand first, to the factory with the least demand
    per GPU so far among those that can hold the cluster's largest job (ties: the larger
    factory, then the id)."""
    needs = demand(jobs)
    owner: dict[str, str] = {}
    for entry in entries:
        for cluster in entry.clusters:
            if cluster in owner:
                raise FederationError(
                    f"{source}: cluster {cluster} is given to both {owner[cluster]} and {entry.id}"
                )
            owner[cluster] = entry.id
    load = {e.id: sum(needs.get(c, 0.0) for c in e.clusters) for e in entries}
    gpus = {e.id: e.gpus for e in entries}
    largest = largest_job(jobs)
    for cluster in sorted(set(needs) - set(owner), key=lambda c: (-needs[c], c)):
        room = [s for s in gpus if gpus[s] >= largest[cluster]] or [max(gpus, key=gpus.__getitem__)]
        site = min(room, key=lambda s: (load[s] / gpus[s], -gpus[s], s))
        owner[cluster] = site
        load[site] += needs[cluster]
    clusters: dict[str, list[str]] = defaultdict(list)
    for cluster, site in sorted(owner.items()):
        clusters[site].append(cluster)
    return Federation(tuple(replace(e, clusters=tuple(clusters[e.id])) for e in entries))


def check_fits(federation: Federation, jobs: Sequence[TraceJob], *, at_home: bool) -> None:
    """Refuse a federation on which some job could never run."""
    home = federation.home()
    sizes = {s.id: s.gpus for s in federation.sites}
    largest = max((s.gpus for s in federation.sites), default=0)
    worst = largest_job(jobs)
    for cluster, gpus in sorted(worst.items()):
        room = sizes[home[cluster]] if at_home else largest
        if gpus > room:
            where = f"its home factory {home[cluster]}" if at_home else "the largest factory"
            raise FederationError(
                f"cluster {cluster} has a {gpus}-GPU job but {where} has {room} GPUs"
            )
