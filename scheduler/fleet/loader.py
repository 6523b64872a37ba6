"""Reading a fleet YAML file into the core's `Fleet`, with errors that name the bad field.

What it decides: how pydantic's errors are worded for an operator (`sites[3] (tx-odessa).asic.
efficiency_j_per_th: must be > 0`), and how the validated file maps onto `scheduler.core.fleet`.
The schema itself is `schema.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml
from pydantic import ValidationError

from scheduler.core.fleet import (
    SETTLEMENT_POINT_SEPARATOR,
    AsicFleetSpec,
    Fleet,
    GpuNodeGroup,
    SiteSpec,
)
from scheduler.fleet.schema import FleetModel, cross_check

EXAMPLE_FLEET_FILE = "example_fleet.yaml"


class ConfigFileError(ValueError):
    """An invalid configuration file; `problems` lists each as `path: message`."""

    what = "configuration"

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            f"{source}: invalid {self.what} ({len(problems)} problem(s)):\n{lines}"
        )


class FleetError(ConfigFileError):
    what = "fleet"


def default_fleet_path() -> Path:
    """The example fleet shipped with the package."""
    return Path(str(resources.files("scheduler.fleet").joinpath(EXAMPLE_FLEET_FILE)))


def _path(loc: tuple[int | str, ...], data: Any) -> str:
    """`('sites', 3, 'asic', 'x')` -> `sites[3] (name).asic.x`, naming the item of a top-level
    list (a fleet's site, a catalogue's model) when it has a name."""
    out = ""
    node = data
    for depth, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            if isinstance(node, Mapping) and depth == 1:
                name = node.get("name")
                if isinstance(name, str):
                    out += f" ({name})"
        else:
            out += f".{part}" if out else str(part)
            node = node.get(part) if isinstance(node, Mapping) else None
    return out or "(top level)"


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, int | float) else str(value)


def _message(error: Mapping[str, Any]) -> str:
    kind = error.get("type", "")
    ctx = error.get("ctx") or {}
    bounds = {
        "greater_than": "must be > {gt}",
        "greater_than_equal": "must be >= {ge}",
        "less_than": "must be < {lt}",
        "less_than_equal": "must be <= {le}",
    }
    if kind in bounds:
        limits = {k: _number(ctx.get(k)) for k in ("gt", "ge", "lt", "le")}
        return bounds[kind].format(**limits) + f" (got {error.get('input')!r})"
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')} (got {error.get('input')!r})"
    message = str(error.get("msg", "invalid"))
    return message.removeprefix("Value error, ")


def format_errors(exc: ValidationError, data: Any) -> list[str]:
    return [f"{_path(tuple(e['loc']), data)}: {_message(e)}" for e in exc.errors()]


def parse_fleet(data: Any, source: str = "<fleet>") -> Fleet:
    """Validate already-parsed YAML/JSON data and build the `Fleet`."""
    if not isinstance(data, Mapping):
        raise FleetError(source, ["(top level): must be a mapping with fx_usd_per_unit and sites"])
    try:
        model = FleetModel.model_validate(data)
    except ValidationError as exc:
        raise FleetError(source, format_errors(exc, data)) from None
    problems = cross_check(model)
    if problems:
        raise FleetError(source, problems)
    return to_fleet(model)


def load_fleet(path: Path | str) -> Fleet:
    """Read and validate a fleet YAML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FleetError(str(path), [f"(file): cannot read: {exc}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise FleetError(str(path), [f"(yaml): {exc}"]) from None
    return parse_fleet(data, str(path))


def to_fleet(model: FleetModel) -> Fleet:
    sites = tuple(
        SiteSpec(
            name=s.name,
            region=s.region,
            price_zone=(
                f"{s.price_zone}{SETTLEMENT_POINT_SEPARATOR}{s.settlement_point}"
                if s.settlement_point else s.price_zone
            ),
            power_cap_mw=s.power_cap_mw,
            asic=AsicFleetSpec(
                hashrate_phs=s.asic.hashrate_phs,
                efficiency_j_per_th=s.asic.efficiency_j_per_th,
                pool_fee=s.asic.pool_fee,
                curtail_block_mw=s.asic.curtail_block_mw,
                ramp_s=s.asic.ramp_s,
            ),
            gpu_groups=tuple(
                GpuNodeGroup(
                    kind=g.kind,
                    count=g.count,
                    idle_power_kw=g.idle_power_kw,
                    busy_power_kw=g.busy_power_kw,
                    memory_mb=g.memory_mb,
                    models=tuple(g.models),
                    gpus_per_node=g.gpus_per_node,
                )
                for g in s.gpus
            ),
        )
        for s in model.sites
    )
    tiers = {m: MappingProxyType(dict(p)) for m, p in model.tiers.items()}
    return Fleet(
        sites=sites,
        fx_usd_per_unit=MappingProxyType(dict(model.fx_usd_per_unit)),
        tier_prices_usd_per_million_tokens=MappingProxyType(tiers),
    )
