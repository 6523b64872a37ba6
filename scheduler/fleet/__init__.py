"""The fleet file: sites, ASICs, GPU nodes, FX rates and tier prices, as validated YAML.

`load_fleet(path) -> scheduler.core.fleet.Fleet`; `default_fleet_path()` is the shipped example
(44 sites in four regions, ~50 EH/s of ASICs and ~3,000 GPUs). The schema is `schema.py`.

Beside it, the model catalogue file (`catalogue.py`): `load_catalogue(path) -> {name: ModelSpec}`;
`default_catalogue_path()` is the shipped `catalogue.yaml` (the embedded models).
"""

from __future__ import annotations

from scheduler.fleet.catalogue import (
    CatalogueError,
    default_catalogue_path,
    load_catalogue,
    parse_catalogue,
)
from scheduler.fleet.loader import (
    FleetError,
    default_fleet_path,
    format_errors,
    load_fleet,
    parse_fleet,
    to_fleet,
)
from scheduler.fleet.schema import TIERS, AsicModel, FleetModel, GpuGroupModel, SiteModel

__all__ = [
    "TIERS",
    "AsicModel",
    "CatalogueError",
    "FleetError",
    "FleetModel",
    "GpuGroupModel",
    "SiteModel",
    "default_catalogue_path",
    "default_fleet_path",
    "format_errors",
    "load_catalogue",
    "load_fleet",
    "parse_catalogue",
    "parse_fleet",
    "to_fleet",
]
