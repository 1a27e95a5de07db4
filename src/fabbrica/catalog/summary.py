"""A factory in one line: what `GET /factories` answers and `fabbrica factories --file`
prints for a catalog file checked without a server (both present it the same way)."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field

from fabbrica.catalog.model import Factory


class FactorySummary(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    host: str | None
    city: str | None
    country: str
    wave: int | None
    selected: dt.date | None
    emulated: bool
    systems: int = Field(description="number of systems")
    gpus: int
    gpus_uncertain: bool = Field(description="true when the GPU count rests on estimates")


def summarise(factory: Factory) -> FactorySummary:
    return FactorySummary(
        id=factory.id,
        name=factory.name,
        host=factory.host,
        city=factory.city,
        country=factory.country,
        wave=factory.wave,
        selected=factory.selected,
        emulated=factory.emulated,
        systems=len(factory.systems),
        gpus=factory.gpus,
        gpus_uncertain=factory.gpus_uncertain,
    )
