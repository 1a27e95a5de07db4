"""The catalog as the federation, and what-ifs on it (`--add-factory`, `--grow`).

Every factory of the catalog is a factory of the replay, with the GPUs of all the
partitions of all its systems, whatever their status (installing and planned systems
included: a plan looks ahead). A factory's GPU model and GPUs per node are those of its
largest partition. Its size is an estimate (`estimated`) when the catalog marks the nodes
or GPUs per node of a partition as uncertain, or when the size is unpublished (no
partition, 0 GPUs): such a factory is given the size of the smallest published factory of
the catalog, on nodes of 4 GPUs of an `unknown` model, so that a new factory counts as a
small one rather than as nothing.

The trace's clusters become home demand by `federation.assign`: the largest demand first,
each to the factory with the least demand per GPU so far (ties: the larger factory), so
that home demand follows size.

What-ifs apply to the factories before the clusters are assigned:
`ID:GPUS:MODEL:COUNTRY` adds a factory (GPUS on nodes of `ADDED_GPUS_PER_NODE`), and
`ID=FACTOR` multiplies one factory's GPUs (rounded to whole nodes, at least one node).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from fabbrica.sim.federation import Site

UNPUBLISHED_MODEL = "unknown"
UNPUBLISHED_GPUS_PER_NODE = 4
ADDED_GPUS_PER_NODE = 4  # GB300/GB200 NVL trays and most current nodes carry 4 GPUs
MAX_GPUS = 10_000_000
MAX_FACTOR = 1000.0
_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")


@dataclass(frozen=True)
class AddFactory:
    id: str
    gpus: int
    gpu_model: str
    country: str


@dataclass(frozen=True)
class Grow:
    id: str
    factor: float


def parse_add(text: str) -> AddFactory:
    """`ID:GPUS:MODEL:COUNTRY` -> AddFactory; ValueError saying what is wrong."""
    parts = text.split(":")
    if len(parts) != 4:
        raise ValueError(f"{text!r} is not ID:GPUS:MODEL:COUNTRY (e.g. giga-de:100000:gb300:DE)")
    ident, gpus, model, country = (p.strip() for p in parts)
    if not _SLUG.match(ident):
        raise ValueError(f"{text!r}: ID {ident!r} is not lower-case letters, digits, - or _")
    try:
        count = int(gpus)
    except ValueError:
        raise ValueError(f"{text!r}: GPUS {gpus!r} is not a whole number") from None
    if not 1 <= count <= MAX_GPUS:
        raise ValueError(f"{text!r}: GPUS must be from 1 to {MAX_GPUS:,}")
    try:
        model = check_model(model)
    except ValueError:
        raise ValueError(
            f"{text!r}: MODEL {model!r} is not a model id such as h100, gb300"
        ) from None
    if not _COUNTRY.match(country.upper()):
        raise ValueError(f"{text!r}: COUNTRY {country!r} is not a two-letter code such as DE")
    return AddFactory(ident, count, model, country.upper())


def parse_new(text: str) -> AddFactory:
    """`ID:MODEL:COUNTRY` (a factory `fabbrica plan` could open; its size is the answer)."""
    parts = text.split(":")
    if len(parts) != 3:
        raise ValueError(f"{text!r} is not ID:MODEL:COUNTRY (e.g. giga-de:gb300:DE)")
    return parse_add(f"{parts[0]}:1:{parts[1]}:{parts[2]}")


def check_model(text: str) -> str:
    """A GPU model id (h100, gb300), lower-cased; ValueError otherwise."""
    if not _SLUG.match(text.strip().lower()):
        raise ValueError(f"{text!r} is not a model id such as h100, gb300")
    return text.strip().lower()


def parse_grow(text: str) -> Grow:
    """`ID=FACTOR` -> Grow; ValueError saying what is wrong."""
    ident, eq, factor = text.partition("=")
    if not eq or not ident.strip():
        raise ValueError(f"{text!r} is not ID=FACTOR (e.g. it4lia=2)")
    try:
        value = float(factor)
    except ValueError:
        raise ValueError(f"{text!r}: FACTOR {factor.strip()!r} is not a number") from None
    if not math.isfinite(value) or not 0 < value <= MAX_FACTOR:
        raise ValueError(f"{text!r}: FACTOR must be above 0 and at most {MAX_FACTOR:g}")
    return Grow(ident.strip(), value)


def unpublished_size(published: Sequence[int]) -> int:
    """The size given to a factory whose size is unpublished: the smallest published."""
    return min((g for g in published if g > 0), default=1000)


def factory_site(
    ident: str,
    country: str,
    partitions: Sequence[tuple[str, int, int]],
    *,
    estimated: bool,
    fallback: int,
) -> Site:
    """A catalog factory as replayed, from its partitions' (GPU model, GPUs per node,
    nodes), as the module docstring says. (The CLI reads the catalog: sim does not.)"""
    gpus = sum(per_node * nodes for _, per_node, nodes in partitions)
    if gpus == 0:
        nodes = max(math.ceil(fallback / UNPUBLISHED_GPUS_PER_NODE), 1)
        return Site(
            ident,
            nodes * UNPUBLISHED_GPUS_PER_NODE,
            (),
            country,
            gpu_model=UNPUBLISHED_MODEL,
            gpus_per_node=UNPUBLISHED_GPUS_PER_NODE,
            estimated=True,
            basis=f"unpublished: assumed the smallest published factory ({fallback:,} GPUs)",
        )
    model, per_node, _ = max(partitions, key=lambda p: p[1] * p[2])
    return Site(
        ident,
        gpus,
        (),
        country,
        gpu_model=model,
        gpus_per_node=per_node,
        estimated=estimated,
        basis="catalog (estimate)" if estimated else "catalog",
    )


def apply(sites: Sequence[Site], adds: Sequence[AddFactory], grows: Sequence[Grow]) -> list[Site]:
    """The factories with the additions, then the growths; ValueError naming a factory
    that is added twice or grown without existing."""
    found = list(sites)
    known = {s.id for s in found}
    for add in adds:
        if add.id in known:
            raise ValueError(f"--add-factory: factory {add.id!r} already exists")
        known.add(add.id)
        found.append(
            Site(
                add.id,
                add.gpus,
                (),
                add.country,
                gpu_model=add.gpu_model,
                gpus_per_node=min(ADDED_GPUS_PER_NODE, add.gpus),
                basis="added (--add-factory)",
            )
        )
    for grow in grows:
        if grow.id not in known:
            raise ValueError(
                f"--grow: no factory {grow.id!r} (factories: {', '.join(sorted(known))})"
            )
        found = [_grown(s, grow.factor) if s.id == grow.id else s for s in found]
    return found


def _grown(site: Site, factor: float) -> Site:
    nodes = max(math.floor(site.gpus * factor / site.gpus_per_node + 0.5), 1)
    return replace(site, gpus=nodes * site.gpus_per_node, basis=f"{site.basis}, x{factor:g}")
