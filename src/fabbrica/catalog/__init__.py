"""The federation catalog: factories, systems, partitions, access modes."""

from fabbrica.catalog.loader import CatalogError, default_catalog_path, load_catalog, parse_catalog
from fabbrica.catalog.model import AccessMode, Catalog, Factory, Partition, System

__all__ = [
    "AccessMode",
    "Catalog",
    "CatalogError",
    "Factory",
    "Partition",
    "System",
    "default_catalog_path",
    "load_catalog",
    "parse_catalog",
]
