"""How the operators' CLI shows AdminService answers: rich tables, totals, and JSON.

Pure formatting of protobuf messages (no calls, no argument checks: `admin_cli.py` does those).
Money in USD, power in MW, energy in MWh, as the API gives them. Times: `Site`/`Node`/`ZonePrice`
times are on the scheduler's clock; `Market.as_of` and accounting hours are on the market's
timeline (history, on a compressed replay).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from rich.console import Console
from rich.table import Table

from hashserve.v1 import admin_pb2, agent_pb2

out = Console()


def as_dict(message: Message) -> dict[str, Any]:
    return MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def print_json(value: object) -> None:
    print(json.dumps(value, sort_keys=False))


def seconds(ts: Any) -> float:
    return float(ts.seconds) + ts.nanos / 1e9


def iso(t_s: float) -> str:
    if t_s <= 0:
        return "-"
    return dt.datetime.fromtimestamp(t_s, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _mw(x: float) -> str:
    """MW with enough digits for a CPU node's 0.0007 MW and a site's 47.25 MW."""
    if x == 0:
        return "0"
    return f"{x:.4f}" if abs(x) < 0.1 else f"{x:.2f}"


def _usd(x: float) -> str:
    return f"{x:,.2f}"


SITE_SUMS = ("mining_mw", "ai_mw", "idle_mw", "curtailed_mw", "nodes_connected", "jobs_running",
             "profit_usd_per_hour")


def site_totals(sites: Iterable[admin_pb2.Site]) -> dict[str, float]:
    totals = dict.fromkeys(SITE_SUMS, 0.0)
    for site in sites:
        for name in SITE_SUMS:
            totals[name] += float(getattr(site, name))
    return totals


def _override(site: admin_pb2.Site) -> str:
    parts = [site.override] if site.override else []
    if site.override_cap_mw:
        parts.append(f"cap {site.override_cap_mw:g} MW")
    return ", ".join(parts) or "-"


def sites_table(sites: Sequence[admin_pb2.Site], title: str | None = None) -> Table:
    table = Table(
        "site", "region", "zone", "$/MWh", "R_mine", "mining MW", "AI MW", "idle MW",
        "curtailed MW", "override", "nodes", "jobs", "profit $/h", "fallback",
        title=title, show_footer=len(sites) > 1,
    )
    for s in sites:
        table.add_row(
            s.name, s.region, s.price_zone, f"{s.price_usd_per_mwh:.2f}",
            f"{s.r_mine_usd_per_mwh:.2f}", _mw(s.mining_mw), _mw(s.ai_mw), _mw(s.idle_mw),
            _mw(s.curtailed_mw), _override(s), str(s.nodes_connected), str(s.jobs_running),
            _usd(s.profit_usd_per_hour), "yes" if s.feed_fallback else "",
        )
    if len(sites) > 1:
        t = site_totals(sites)
        footers = [f"total ({len(sites)})", "", "", "", "", _mw(t["mining_mw"]), _mw(t["ai_mw"]),
                   _mw(t["idle_mw"]), _mw(t["curtailed_mw"]), "",
                   str(int(t["nodes_connected"])), str(int(t["jobs_running"])),
                   _usd(t["profit_usd_per_hour"]), ""]
        for column, footer in zip(table.columns, footers, strict=True):
            column.footer = footer
    return table


def print_market(m: admin_pb2.Market, json_out: bool, now_s: float) -> None:
    zones = []
    for z in m.zones:
        as_of_s = seconds(z.as_of)
        d = as_dict(z)
        # Age on the scheduler's clock (on a compressed replay an hour of market is a few s).
        d["age_s"] = round(now_s - as_of_s, 3) if as_of_s > 0 else None
        zones.append(d)
    if json_out:
        d = as_dict(m)
        d["zones"] = zones
        print_json(d)
        return
    table = Table("zone", "$/MWh", "source", "as of", "age s", "stale", title="power prices")
    for z, raw in zip(zones, m.zones, strict=True):
        age = "-" if z["age_s"] is None else f"{z['age_s']:.1f}"
        table.add_row(
            raw.zone, f"{raw.price_usd_per_mwh:.2f}" if not raw.stale else "-",
            raw.source or "-", iso(seconds(raw.as_of)), age,
            "[red]stale[/]" if raw.stale else "",
        )
    out.print(table)
    out.print(
        f"BTC ${m.btc_usd:,.0f}   hashprice ${m.hashprice_usd_per_phs_day:.2f}/PH/day   "
        f"difficulty {m.difficulty:.4g}   market time {iso(seconds(m.as_of))}"
    )
    for problem in m.problems:
        out.print(f"[yellow]problem:[/] {problem}")


def curtailments_table(windows: Sequence[admin_pb2.CurtailmentWindow]) -> Table:
    table = Table("id", "site", "start", "end", "max load MW", "active", "reason")
    for w in windows:
        table.add_row(
            w.id, w.site, iso(seconds(w.start)), iso(seconds(w.end)), f"{w.max_load_mw:g}",
            "[yellow]yes[/]" if w.active else "no", w.reason,
        )
    return table


def nodes_table(nodes: Sequence[admin_pb2.Node]) -> Table:
    table = Table("node", "site", "region", "gpu", "connected", "draining", "jobs", "power kW",
                  "util", "models", "last seen")
    for n in nodes:
        table.add_row(
            n.id, n.site, n.region, n.gpu_kind, "yes" if n.connected else "[red]no[/]",
            "[yellow]draining[/]" if n.draining else "",
            f"{n.running_jobs}/{n.max_concurrent_jobs}", f"{n.power_draw_kw:.2f}",
            f"{n.gpu_utilization:.0%}", _models_cell(n), iso(seconds(n.last_seen)),
        )
    return table


def _models_cell(n: admin_pb2.Node) -> str:
    """Each model it can serve, marked by what its engines do with it now."""
    loaded, loading = set(n.loaded_models), set(n.loading_models)

    def mark(m: str) -> str:
        if m in loaded:
            return f"{m} [green]loaded[/]"
        if m in loading:
            return f"{m} [yellow]loading[/]"
        return f"{m} [dim]cold[/]"

    return ", ".join(mark(m) for m in n.models)


ACCOUNT_SUMS = ("mining_mwh", "ai_mwh", "idle_mwh", "curtailed_mwh", "mining_revenue_usd",
                "ai_revenue_usd", "power_cost_usd", "profit_usd")


def accounting_totals(rows: Iterable[admin_pb2.AccountingRow]) -> dict[str, float]:
    totals = dict.fromkeys(ACCOUNT_SUMS, 0.0)
    for row in rows:
        for name in ACCOUNT_SUMS:
            totals[name] += getattr(row, name)
    return totals


def accounting_table(rows: Sequence[admin_pb2.AccountingRow]) -> Table:
    table = Table("site", "hour (UTC)", "mining MWh", "AI MWh", "idle MWh", "curtailed MWh",
                  "mining $", "AI $", "power $", "profit $", show_footer=True)
    for r in rows:
        table.add_row(
            r.site, iso(seconds(r.hour))[:-4] + "Z", _mw(r.mining_mwh), _mw(r.ai_mwh),
            _mw(r.idle_mwh), _mw(r.curtailed_mwh), _usd(r.mining_revenue_usd),
            _usd(r.ai_revenue_usd), _usd(r.power_cost_usd), _usd(r.profit_usd),
        )
    t = accounting_totals(rows)
    footers = [f"total ({len(rows)} rows)", "", _mw(t["mining_mwh"]), _mw(t["ai_mwh"]),
               _mw(t["idle_mwh"]), _mw(t["curtailed_mwh"]), _usd(t["mining_revenue_usd"]),
               _usd(t["ai_revenue_usd"]), _usd(t["power_cost_usd"]), _usd(t["profit_usd"])]
    for column, footer in zip(table.columns, footers, strict=True):
        column.footer = footer
    return table


USAGE_COLUMNS = ("tenant", "model", "tier", "hour", "jobs", "prompt_tokens",
                 "completion_tokens", "charged_usd")


def usage_records(rows: Iterable[admin_pb2.UsageRow]) -> list[dict[str, object]]:
    """Rows as plain records (JSON, CSV): the hour as RFC 3339, or "" over the whole range."""
    return [{"tenant": r.tenant, "model": r.model, "tier": r.tier,
             "hour": iso(seconds(r.hour)) if r.HasField("hour") else "", "jobs": r.jobs,
             "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
             "charged_usd": r.charged_usd} for r in rows]


def usage_table(rows: Sequence[admin_pb2.UsageRow]) -> Table:
    hourly = any(r.HasField("hour") for r in rows)
    headers = ["tenant", "model", "tier", *(["hour (UTC)"] if hourly else []), "jobs",
               "prompt tokens", "completion tokens", "charged $"]
    table = Table(*headers, show_footer=True)
    for r in rows:
        hour = [iso(seconds(r.hour))[:-4] + "Z"] if hourly else []
        table.add_row(r.tenant, r.model, r.tier, *hour, f"{r.jobs:,}", f"{r.prompt_tokens:,}",
                      f"{r.completion_tokens:,}", f"{r.charged_usd:,.6f}")
    footers = [f"total ({len(rows)} rows)", "", "", *([""] if hourly else []),
               f"{sum(r.jobs for r in rows):,}", f"{sum(r.prompt_tokens for r in rows):,}",
               f"{sum(r.completion_tokens for r in rows):,}",
               f"{sum(r.charged_usd for r in rows):,.6f}"]
    for column, footer in zip(table.columns, footers, strict=True):
        column.footer = footer
    return table


AGENT_CREDENTIAL_COLUMNS = ("credential_id", "kind", "agent_id", "site", "region", "agent_ids",
                            "uses_left", "issued_at", "expires_at", "revoked_at", "last_used_at",
                            "issued_by")


def credential_kind(kind: int) -> str:
    """`CREDENTIAL_KIND_CERTIFICATE` -> `certificate` ("unknown" for a kind this CLI predates)."""
    try:
        name = agent_pb2.CredentialKind.Name(kind)
    except ValueError:
        return "unknown"
    return name.removeprefix("CREDENTIAL_KIND_").lower()


def _when(message: Message, name: str) -> str:
    """An optional timestamp field as `iso`, or "" when unset (never, or not yet)."""
    return iso(seconds(getattr(message, name))) if message.HasField(name) else ""


def agent_credential_records(
    creds: Iterable[admin_pb2.AgentCredential], flat: bool = False
) -> list[dict[str, object]]:
    """Credentials as plain records (JSON, CSV): unset times as "", `uses_left` only for a
    bootstrap token (None otherwise); `flat` (CSV) gives its agent ids as one spaced string."""
    return [{"credential_id": c.credential_id, "kind": credential_kind(c.kind),
             "agent_id": c.agent_id, "site": c.site, "region": c.region,
             "agent_ids": " ".join(c.agent_ids) if flat else list(c.agent_ids),
             "uses_left": c.uses_left if c.kind == agent_pb2.CREDENTIAL_KIND_BOOTSTRAP else None,
             "issued_at": _when(c, "issued_at"), "expires_at": _when(c, "expires_at"),
             "revoked_at": _when(c, "revoked_at"), "last_used_at": _when(c, "last_used_at"),
             "issued_by": c.issued_by} for c in creds]


def credential_scope(c: admin_pb2.AgentCredential) -> str:
    """What a bootstrap token may still enroll; "-" for a credential that is an agent's own."""
    if c.kind != agent_pb2.CREDENTIAL_KIND_BOOTSTRAP:
        return "-"
    who = ", ".join(c.agent_ids) if c.agent_ids else "any agent id"
    uses = f"{c.uses_left} use{'' if c.uses_left == 1 else 's'} left"
    return f"{who}; {uses}"


def agent_credentials_table(creds: Sequence[admin_pb2.AgentCredential], now_s: float) -> Table:
    """Revoked and expired rows stay (with their last use): that is what an audit looks for."""
    table = Table(title=f"agent credentials at {iso(now_s)}")
    # On a narrow terminal an id folds onto the next line rather than losing its end to "...":
    # an id cut short is no use to `revoke-agent --credential`.
    for name in ("credential", "kind", "agent", "site", "region", "scope", "issued", "expires",
                 "revoked", "last used", "issued by"):
        table.add_column(name, overflow="fold")
    for c in creds:
        expires = _when(c, "expires_at") or "never"
        if c.HasField("expires_at") and seconds(c.expires_at) <= now_s:
            expires = f"[yellow]{expires} (expired)[/]"
        revoked = _when(c, "revoked_at")
        table.add_row(
            c.credential_id, credential_kind(c.kind), c.agent_id or "-", c.site,
            c.region, credential_scope(c), _when(c, "issued_at") or "-", expires,
            f"[red]{revoked}[/]" if revoked else "", _when(c, "last_used_at") or "never",
            c.issued_by or "-",
        )
    return table
