from __future__ import annotations

from fastapi import APIRouter, Path

from fabbrica.api.deps import CatalogDep, CurrentUser
from fabbrica.api.params import ID_PATTERN
from fabbrica.api.schemas import AccessModePublic, FactoryDetail, SectorPublic
from fabbrica.catalog.summary import FactorySummary, summarise
from fabbrica.core.errors import NotFound

router = APIRouter(tags=["catalog"])


@router.get("/factories", response_model=list[FactorySummary])
def list_factories(catalog: CatalogDep, _user: CurrentUser) -> list[FactorySummary]:
    """Every factory of the federation, in catalog order."""
    return [summarise(f) for f in catalog.factories]


@router.get("/factories/{factory_id}", response_model=FactoryDetail)
def get_factory(
    catalog: CatalogDep,
    _user: CurrentUser,
    factory_id: str = Path(max_length=64, pattern=ID_PATTERN),
) -> FactoryDetail:
    """One factory with its systems and partitions."""
    factory = catalog.factory(factory_id)
    if factory is None:
        raise NotFound(f"no factory {factory_id!r} in the catalog", field="factory_id")
    return FactoryDetail.model_validate(factory)


@router.get("/access-modes", response_model=list[AccessModePublic])
def list_access_modes(catalog: CatalogDep, _user: CurrentUser) -> list[AccessModePublic]:
    """The access modes and the rules their calls apply."""
    return [AccessModePublic.model_validate(m) for m in catalog.access_modes]


@router.get("/sectors", response_model=list[SectorPublic])
def list_sectors(catalog: CatalogDep, _user: CurrentUser) -> list[SectorPublic]:
    """The sectors an organisation may name (by id, name, or a unique start of either)."""
    return [SectorPublic(id=s.id, name=s.name) for s in catalog.sectors]
