"""The demo's money view: per site, the price, the mode split and the money, read live from the
scheduler's admin API while the market replays on the compressed clock."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import grpc
from rich.table import Table

from hashserve.v1 import admin_pb2, admin_pb2_grpc


@dataclass
class Economics:
    sites: list[admin_pb2.Site]
    market: admin_pb2.Market
    accounting: list[admin_pb2.AccountingRow]


class AdminReader:
    def __init__(self, address: str, admin_key: str) -> None:
        self.channel = grpc.aio.insecure_channel(address)
        self.stub = admin_pb2_grpc.AdminServiceStub(self.channel)
        self.metadata = (("authorization", f"Bearer {admin_key}"),)

    async def read(self) -> Economics:
        sites = await self.stub.ListSites(
            admin_pb2.ListSitesRequest(), metadata=self.metadata, timeout=5
        )
        market = await self.stub.GetMarket(
            admin_pb2.GetMarketRequest(), metadata=self.metadata, timeout=5
        )
        accounting = await self.stub.GetAccounting(
            admin_pb2.GetAccountingRequest(), metadata=self.metadata, timeout=5
        )
        return Economics(list(sites.sites), market, list(accounting.rows))

    async def close(self) -> None:
        await self.channel.close()


def live_table(econ: Economics, demo_sites: Collection[str]) -> Table:
    when = econ.market.as_of.ToDatetime().strftime("%Y-%m-%d %H:%M") if econ.market.as_of else ""
    table = Table(
        title=(
            f"market {when} UTC (replayed): BTC ${econ.market.btc_usd:,.0f}, "
            f"hashprice ${econ.market.hashprice_usd_per_phs_day:.1f}/PH/day"
        )
    )
    for col in ("site", "price $/MWh", "R_mine", "mining MW", "AI kW", "curtailed MW", "mode"):
        table.add_column(col, justify="left" if col in ("site", "mode") else "right")
    for s in econ.sites:
        if s.name not in demo_sites:
            continue
        mode = "mine" if s.mining_mw > 0 else "curtail"
        if s.override:
            mode += f" (ops: {s.override})"
        table.add_row(
            s.name,
            f"{s.price_usd_per_mwh:.1f}",
            f"{s.r_mine_usd_per_mwh:.1f}",
            f"{s.mining_mw:.2f}",
            f"{s.ai_mw * 1000:.2f}",
            f"{s.curtailed_mw:.2f}",
            mode,
        )
    fleet_mining = sum(s.mining_mw for s in econ.sites)
    fleet_curtailed = sum(s.curtailed_mw for s in econ.sites)
    table.caption = (
        f"fleet of {len(econ.sites)} sites: {fleet_mining:.0f} MW mining, "
        f"{fleet_curtailed:.0f} MW curtailed"
    )
    return table


def money_table(econ: Economics, demo_sites: Collection[str]) -> Table:
    totals: dict[str, list[float]] = {}
    hours: set[float] = set()
    for r in econ.accounting:
        hours.add(r.hour.seconds)
        t = totals.setdefault(r.site, [0.0] * 7)
        for i, v in enumerate(
            (
                r.mining_mwh,
                r.ai_mwh,
                r.curtailed_mwh,
                r.mining_revenue_usd,
                r.ai_revenue_usd,
                r.power_cost_usd,
                r.profit_usd,
            )
        ):
            t[i] += v
    table = Table(title=f"money over the {len(hours)} market hours replayed")
    for col in (
        "site",
        "mining MWh",
        "AI kWh",
        "curtailed MWh",
        "mining $",
        "AI $",
        "power $",
        "profit $",
    ):
        table.add_column(col, justify="left" if col == "site" else "right")
    fleet = [0.0] * 7
    for site in sorted(totals):
        t = totals[site]
        fleet = [a + b for a, b in zip(fleet, t, strict=True)]
        if site in demo_sites:
            table.add_row(
                site,
                f"{t[0]:,.1f}",
                f"{t[1] * 1000:,.3f}",
                f"{t[2]:,.1f}",
                f"{t[3]:,.0f}",
                f"{t[4]:,.4f}",
                f"{t[5]:,.0f}",
                f"{t[6]:,.0f}",
            )
    table.add_row(
        "all sites",
        f"{fleet[0]:,.1f}",
        f"{fleet[1] * 1000:,.3f}",
        f"{fleet[2]:,.1f}",
        f"{fleet[3]:,.0f}",
        f"{fleet[4]:,.4f}",
        f"{fleet[5]:,.0f}",
        f"{fleet[6]:,.0f}",
        style="bold",
    )
    return table
