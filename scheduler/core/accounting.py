"""Accounting per site and hour: MWh to mining, AI, idle GPUs and curtailed; revenue, cost, profit.

`account_interval` turns one site's plan over one interval into energy and money; `Accounting`
sums intervals into (site, UTC hour) rows, splitting an interval that straddles an hour boundary
in proportion to time. Pure bookkeeping: what AI work earned is the caller's figure (from the jobs
that actually ran), the rest follows from the plan and the market.

Conventions:
- Mining revenue = mining MWh x the plan's R_mine (hashprice after the pool fee, per MWh). When the
  plan was in the hashprice fallback that R_mine is the conservative floor.
- Power cost = MWh drawn (mining + AI + idle GPUs) x the zone's price from `market` when usable,
  else the price the plan decided on (the fallback price), unless the caller passes the price.
  Curtailed MWh cost nothing; negative prices make the cost negative (the site is paid).
- AI MWh default to the plan's `ai_mw` x hours; pass the measured figure when known.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields

from scheduler.core.market import MarketSnapshot
from scheduler.core.planner.output import SitePowerPlan

HOUR_S = 3600.0


@dataclass(frozen=True)
class IntervalAccount:
    site: str
    start_s: float
    duration_s: float
    mining_mwh: float
    ai_mwh: float
    idle_mwh: float
    curtailed_mwh: float
    mining_revenue_usd: float
    ai_revenue_usd: float
    power_cost_usd: float

    @property
    def profit_usd(self) -> float:
        return self.mining_revenue_usd + self.ai_revenue_usd - self.power_cost_usd

    @property
    def energy_mwh(self) -> float:
        return self.mining_mwh + self.ai_mwh + self.idle_mwh


@dataclass(frozen=True)
class SiteHourRow:
    """Sums for one site and one UTC hour (`hour_start_s` a multiple of 3600)."""

    site: str
    hour_start_s: float
    mining_mwh: float = 0.0
    ai_mwh: float = 0.0
    idle_mwh: float = 0.0
    curtailed_mwh: float = 0.0
    mining_revenue_usd: float = 0.0
    ai_revenue_usd: float = 0.0
    power_cost_usd: float = 0.0
    covered_s: float = 0.0  # seconds of the hour that intervals accounted for

    @property
    def profit_usd(self) -> float:
        return self.mining_revenue_usd + self.ai_revenue_usd - self.power_cost_usd

    @property
    def energy_mwh(self) -> float:
        return self.mining_mwh + self.ai_mwh + self.idle_mwh


_SUMMED = ("mining_mwh", "ai_mwh", "idle_mwh", "curtailed_mwh", "mining_revenue_usd",
           "ai_revenue_usd", "power_cost_usd")


def account_interval(
    plan: SitePowerPlan,
    market: MarketSnapshot | None,
    duration_s: float,
    ai_revenue_usd: float,
    start_s: float | None = None,
    ai_mwh: float | None = None,
    price_usd_per_mwh: float | None = None,
) -> IntervalAccount:
    """Energy and money of one site following `plan` for `duration_s` from `start_s`.

    `start_s` defaults to the market snapshot's time. Worked example: 10 MW mining and 2 MW AI for
    one hour at $50/MWh with R_mine $95/MWh and $3,000 of AI revenue: mining earns $950, power
    costs 12 x 50 = $600, profit = 950 + 3,000 - 600 = $3,350.
    """
    if duration_s < 0.0:
        raise ValueError(f"duration_s must be >= 0, got {duration_s!r}")
    if start_s is None:
        if market is None:
            raise ValueError("start_s is needed when no market snapshot is given")
        start_s = market.t_s
    hours = duration_s / HOUR_S
    if price_usd_per_mwh is None:
        known = market.usable_price(plan.price_zone) if market is not None else None
        price_usd_per_mwh = known if known is not None else plan.price_usd_per_mwh
    mining_mwh = plan.mining_mw * hours
    ai_energy_mwh = plan.ai_mw * hours if ai_mwh is None else ai_mwh
    idle_mwh = plan.idle_gpu_mw * hours
    return IntervalAccount(
        site=plan.site,
        start_s=start_s,
        duration_s=duration_s,
        mining_mwh=mining_mwh,
        ai_mwh=ai_energy_mwh,
        idle_mwh=idle_mwh,
        curtailed_mwh=plan.curtailed_mw * hours,
        mining_revenue_usd=mining_mwh * plan.r_mine_usd_per_mwh,
        ai_revenue_usd=ai_revenue_usd,
        power_cost_usd=(mining_mwh + ai_energy_mwh + idle_mwh) * price_usd_per_mwh,
    )


def _scaled(interval: IntervalAccount, fraction: float) -> dict[str, float]:
    return {name: getattr(interval, name) * fraction for name in _SUMMED}


def _row(site: str, hour_start_s: float, sums: dict[str, float], covered_s: float) -> SiteHourRow:
    return SiteHourRow(
        site=site,
        hour_start_s=hour_start_s,
        mining_mwh=sums["mining_mwh"],
        ai_mwh=sums["ai_mwh"],
        idle_mwh=sums["idle_mwh"],
        curtailed_mwh=sums["curtailed_mwh"],
        mining_revenue_usd=sums["mining_revenue_usd"],
        ai_revenue_usd=sums["ai_revenue_usd"],
        power_cost_usd=sums["power_cost_usd"],
        covered_s=covered_s,
    )


class Accounting:
    """The ledger: `SiteHourRow`s keyed by (site, hour start)."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, float], SiteHourRow] = {}

    def add(self, interval: IntervalAccount) -> None:
        """Add an interval, split over the UTC hours it covers in proportion to time."""
        if interval.duration_s <= 0.0:
            return
        t = interval.start_s
        end = interval.start_s + interval.duration_s
        while t < end:
            hour = (t // HOUR_S) * HOUR_S
            piece_end = min(end, hour + HOUR_S)
            piece_s = piece_end - t
            self._merge(interval.site, hour, _scaled(interval, piece_s / interval.duration_s),
                        piece_s)
            t = piece_end

    def put(self, row: SiteHourRow) -> None:
        """A row as stored (the journal's copy after a restart)."""
        self._rows[(row.site, row.hour_start_s)] = row

    def hours_of(self, interval: IntervalAccount) -> list[float]:
        """The hour starts an interval touches (the rows `add` changes)."""
        if interval.duration_s <= 0.0:
            return []
        first = (interval.start_s // HOUR_S) * HOUR_S
        last = ((interval.start_s + interval.duration_s - 1e-9) // HOUR_S) * HOUR_S
        return [first + i * HOUR_S for i in range(int((last - first) // HOUR_S) + 1)]

    def forget_before(self, hour_start_s: float) -> int:
        """Drop the rows of hours starting before `hour_start_s`; returns how many went."""
        old = [k for k in self._rows if k[1] < hour_start_s]
        for k in old:
            del self._rows[k]
        return len(old)

    def add_all(self, intervals: Iterable[IntervalAccount]) -> None:
        for interval in intervals:
            self.add(interval)

    def _merge(self, site: str, hour: float, amounts: dict[str, float], covered_s: float) -> None:
        row = self._rows.get((site, hour)) or SiteHourRow(site=site, hour_start_s=hour)
        sums = {name: getattr(row, name) + amounts[name] for name in _SUMMED}
        self._rows[(site, hour)] = _row(site, hour, sums, row.covered_s + covered_s)

    def row(self, site: str, hour_start_s: float) -> SiteHourRow | None:
        return self._rows.get((site, hour_start_s))

    def rows(self) -> list[SiteHourRow]:
        """All rows, by hour then site."""
        return [self._rows[k] for k in sorted(self._rows, key=lambda k: (k[1], k[0]))]

    def totals(self, site: str | None = None) -> SiteHourRow:
        """Sums over all hours (of one site, or of all with `site` None: named "*")."""
        sums = {name: 0.0 for name in _SUMMED}
        covered = 0.0
        for (row_site, _), row in self._rows.items():
            if site is not None and row_site != site:
                continue
            for name in _SUMMED:
                sums[name] += getattr(row, name)
            covered += row.covered_s
        return _row(site or "*", float("nan"), sums, covered)

    def totals_by_site(self) -> dict[str, SiteHourRow]:
        return {s: self.totals(s) for s in sorted({k[0] for k in self._rows})}

    def as_records(self) -> list[dict[str, float | str]]:
        """Rows as plain dicts (for a CSV or a report), with profit added."""
        records: list[dict[str, float | str]] = []
        for row in self.rows():
            record: dict[str, float | str] = {f.name: getattr(row, f.name) for f in fields(row)}
            record["profit_usd"] = row.profit_usd
            records.append(record)
        return records
