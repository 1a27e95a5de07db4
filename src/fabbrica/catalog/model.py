"""The federation catalog as typed, validated data.

factory > system > partition; access modes with their rules; who may apply.
Every model forbids unknown fields, so a misspelt key in an operator's file is an error,
not a silently ignored default. A field named in an entry's `uncertain` list is an
estimate: a default an operator overrides, never a fact.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fabbrica.core.access import Intake
from fabbrica.core.billing import BillingRule
from fabbrica.core.text import SLUG_PATTERN

Slug = Annotated[str, Field(pattern=SLUG_PATTERN)]
CountryCode = Annotated[str, Field(pattern=r"^[A-Z]{2}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    uncertain: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _uncertain_names_fields(self) -> Self:
        known = set(type(self).model_fields)
        unknown = [name for name in self.uncertain if name not in known]
        if unknown:
            raise ValueError(f"uncertain names unknown field(s): {', '.join(unknown)}")
        return self


class OrganisationType(StrEnum):
    STARTUP = "startup"
    SME = "sme"
    LARGE_INDUSTRY = "large_industry"
    ACADEMIA = "academia"
    PUBLIC_SECTOR = "public_sector"


class SystemStatus(StrEnum):
    OPERATING = "operating"
    INSTALLING = "installing"
    PLANNED = "planned"


class Review(StrEnum):
    ELIGIBILITY = "eligibility"
    TECHNICAL = "technical"
    TECHNICAL_AND_PEER = "technical_and_peer"


class Decision(StrEnum):
    AUTOMATIC = "automatic"
    MANUAL = "manual"


class Channel(StrEnum):
    """Who funds the GPU-hours a mode grants: the EU's calls or the hosting state's
    national access (the federation report compares them with a factory's `eu_share`)."""

    EU = "eu"
    NATIONAL = "national"


class Partition(_Strict):
    """Nodes of one kind: one GPU model, the same GPUs and memory per node."""

    id: Slug
    gpu_model: Slug = Field(description="normalised model id, as in a Slurm GRES type: h100, a100")
    gpu_name: str = Field(min_length=1, max_length=120)
    gpus_per_node: int = Field(ge=1, le=1024)
    nodes: int = Field(ge=1, le=1_000_000)
    cpus_per_node: int = Field(ge=1, le=100_000)
    memory_per_node_gb: int = Field(ge=1, le=1_000_000)
    billing: BillingRule

    @property
    def gpus(self) -> int:
        return self.gpus_per_node * self.nodes


class System(_Strict):
    """A supercomputer at a factory."""

    id: Slug
    name: str = Field(min_length=1, max_length=120)
    status: SystemStatus
    available_from: str | None = Field(default=None, max_length=40)
    partitions: tuple[Partition, ...] = ()

    @model_validator(mode="after")
    def _unique_partitions(self) -> Self:
        _require_unique("partitions", [p.id for p in self.partitions])
        return self

    @property
    def gpus(self) -> int:
        return sum(p.gpus for p in self.partitions)


class Factory(_Strict):
    """An AI Factory: one site of the federation."""

    id: Slug
    name: str = Field(min_length=1, max_length=120)
    host: str | None = Field(default=None, max_length=200)
    city: str | None = Field(default=None, max_length=120)
    country: CountryCode
    partners: tuple[CountryCode, ...] = ()
    wave: int | None = Field(default=None, ge=1, le=99)
    selected: dt.date | None = None
    focus_areas: tuple[str, ...] = ()
    emulated: bool = False
    require_mfa: bool = Field(
        default=False,
        description="operators act on this factory (proposals, calls, allocations, agents) "
        "and jobs run here only from a sign-in with multi-factor authentication",
    )
    eu_share: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="the share of the factory's GPU-hours funded for EU calls (the rest national)",
    )
    systems: tuple[System, ...] = ()

    @model_validator(mode="after")
    def _unique_systems(self) -> Self:
        _require_unique("systems", [s.id for s in self.systems])
        return self

    @property
    def gpus(self) -> int:
        return sum(s.gpus for s in self.systems)

    @property
    def gpus_uncertain(self) -> bool:
        """True when the GPU count is unknown (0) or any figure behind it is an estimate."""
        return self.gpus == 0 or any(
            _partition_uncertain(s, p) for s in self.systems for p in s.partitions
        )

    def partitions(self) -> list[tuple[System, Partition]]:
        return [(s, p) for s in self.systems for p in s.partitions]

    def operating_partitions(self) -> list[Partition]:
        """The partitions of systems in operation: what can run jobs and be offered."""
        return [p for s in self.systems if s.status is SystemStatus.OPERATING for p in s.partitions]


def _partition_uncertain(system: System, partition: Partition) -> bool:
    return bool({"nodes", "gpus_per_node"} & set(partition.uncertain)) or bool(
        {"partitions", "status"} & set(system.uncertain)
    )


class AccessMode(_Strict):
    """An access mode (Playground, Fast Lane ...) and the rules its calls apply."""

    id: Slug
    name: str = Field(min_length=1, max_length=80)
    code: str = Field(pattern=r"^[A-Z]{2}$", description="two letters in project ids: PG, FL")
    description: str = Field(default="", max_length=2000)
    organisation_types: tuple[OrganisationType, ...] = Field(min_length=1)
    min_gpu_hours: float | None = Field(default=None, ge=0)
    max_gpu_hours: float | None = Field(default=None, gt=0)
    duration_months: tuple[Annotated[int, Field(ge=1, le=60)], ...] = Field(min_length=1)
    intake: Intake
    cutoffs_per_year: int | None = Field(default=None, ge=1, le=366)
    review: Review
    decision: Decision
    min_reviews: int = Field(default=0, ge=0, le=20)
    min_average_score: float | None = Field(default=None, ge=1, le=5)
    decision_target_working_days: int | None = Field(default=None, ge=0, le=365)
    requires: tuple[Slug, ...] = ()
    legacy: bool = False
    channel: Channel = Channel.EU

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if (
            self.min_gpu_hours is not None
            and self.max_gpu_hours is not None
            and self.min_gpu_hours > self.max_gpu_hours
        ):
            raise ValueError("min_gpu_hours is larger than max_gpu_hours")
        if self.intake is Intake.CUTOFFS and self.cutoffs_per_year is None:
            raise ValueError("cutoffs_per_year is required when intake is cutoffs")
        if self.review is Review.TECHNICAL_AND_PEER and self.min_reviews < 1:
            raise ValueError("a mode with peer review needs min_reviews of at least 1")
        return self


class Sector(_Strict):
    id: Slug
    name: str = Field(min_length=1, max_length=120)


class GpuModel(_Strict):
    """A GPU model's peak dense throughput, for the training compute estimate of a model
    card (GPU-hours x peak FLOP/s: an upper bound, stated as an estimate)."""

    id: Slug
    peak_tflops: float = Field(gt=0, le=1_000_000, description="dense BF16, TFLOP/s per GPU")
    source: str = Field(default="", max_length=300)


class Eligibility(_Strict):
    member_states: tuple[CountryCode, ...] = Field(min_length=1)
    participating_states: tuple[CountryCode, ...] = ()

    @property
    def countries(self) -> frozenset[str]:
        return frozenset(self.member_states) | frozenset(self.participating_states)


class Catalog(BaseModel):
    """The whole federation, as loaded from one catalog file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1]
    name: str = Field(min_length=1, max_length=120)
    eligibility: Eligibility
    organisation_types: tuple[OrganisationType, ...] = Field(min_length=1)
    sectors: tuple[Sector, ...] = Field(min_length=1)
    access_modes: tuple[AccessMode, ...] = Field(min_length=1)
    factories: tuple[Factory, ...] = Field(min_length=1)
    gpu_models: tuple[GpuModel, ...] = ()

    @model_validator(mode="after")
    def _cross_references(self) -> Self:
        _require_unique("factories", [f.id for f in self.factories])
        _require_unique("access_modes", [m.id for m in self.access_modes])
        _require_unique("access_modes (code)", [m.code for m in self.access_modes])
        _require_unique("sectors", [s.id for s in self.sectors])
        mode_ids = {m.id for m in self.access_modes}
        for mode in self.access_modes:
            missing = [r for r in mode.requires if r not in mode_ids]
            if missing:
                raise ValueError(
                    f"access mode {mode.id!r} requires unknown mode(s): {', '.join(missing)}"
                )
        return self

    def factory(self, factory_id: str) -> Factory | None:
        return next((f for f in self.factories if f.id == factory_id), None)

    def peak_flops(self, gpu_model: str | None) -> float | None:
        """A GPU's peak dense FLOP/s, when the catalog states it."""
        found = next((g for g in self.gpu_models if g.id == gpu_model), None)
        return found.peak_tflops * 1e12 if found is not None else None

    def mfa_factories(self) -> frozenset[str]:
        """The factories that require multi-factor authentication (`require_mfa`)."""
        return frozenset(f.id for f in self.factories if f.require_mfa)

    def access_mode(self, mode_id: str) -> AccessMode | None:
        return next((m for m in self.access_modes if m.id == mode_id), None)

    def with_factory(self, factory: Factory) -> Catalog:
        """A copy with one more factory (the embedded `local` one, for instance)."""
        if self.factory(factory.id) is not None:
            raise ValueError(f"factory {factory.id!r} is already in the catalog")
        return self.model_copy(update={"factories": (*self.factories, factory)})


def _require_unique(what: str, ids: list[str]) -> None:
    dupes = sorted(i for i, n in Counter(ids).items() if n > 1)
    if dupes:
        raise ValueError(f"duplicate id(s) in {what}: {', '.join(dupes)}")
