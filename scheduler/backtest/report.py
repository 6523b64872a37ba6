"""Showing a backtest: a rich table on the terminal, one JSON object, and a Markdown report with PNG
charts (matplotlib, Agg backend, no display needed).

Decides only presentation: which figures, in which order, rounded how. The numbers come from
`PolicyResult` and `OptimumResult`; the fraction of the optimum is profit / optimum profit.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from scheduler.backtest.optimum import OptimumResult
from scheduler.backtest.results import PolicyResult
from scheduler.backtest.world import World

MAX_SITE_CHARTS = 6


@dataclass(frozen=True)
class ScenarioOutcome:
    """One scenario's runs: every policy and the optimum, on one world."""

    name: str
    results: tuple[PolicyResult, ...]
    optimum: OptimumResult | None
    world: World | None = None  # for charts; absent when results came back without it
    notes: Mapping[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        bound = self.optimum.profit_usd if self.optimum is not None else None
        out: dict[str, Any] = {
            "policies": {r.policy: r.summary(bound) for r in self.results},
            "optimum": None if self.optimum is None else optimum_summary(self.optimum),
        }
        out.update(self.notes)
        return out


def optimum_summary(opt: OptimumResult) -> dict[str, Any]:
    return {
        "profit_usd": round(opt.profit_usd, 2),
        "revenue_usd": {
            "mining": round(opt.mining_revenue_usd, 2),
            "ai": round(opt.ai_revenue_usd, 2),
        },
        "power_cost_usd": round(opt.power_cost_usd, 2),
        "boundary_credit_usd": round(opt.boundary_credit_usd, 2),
        "mwh": {
            "mining": round(opt.mining_mwh, 3),
            "ai_busy": round(opt.ai_busy_mwh, 3),
            "ai_idle": round(opt.ai_idle_mwh, 3),
        },
        "served_mtok": round(float(opt.served_mtok.sum()), 3),
        "unserved_mtok": round(float(opt.unserved_mtok.sum()), 3),
        "windows": opt.windows,
        "window_h": opt.window_h,
        "solve_s": round(opt.solve_s, 2),
        "mip_gap_usd": round(opt.mip_gap_usd, 2),
        "integer_site_hours": opt.integer_site_hours,
    }


def json_document(outcomes: Sequence[ScenarioOutcome], meta: Mapping[str, Any]) -> dict[str, Any]:
    """One object: the first scenario's policies at the top; with a sweep, every scenario under
    "scenarios" too."""
    first = outcomes[0].summary() if outcomes else {"policies": {}, "optimum": None}
    document = {
        **meta,
        "scenario": outcomes[0].name if outcomes else None,
        "policies": first["policies"],
        "optimum": first["optimum"],
    }
    if len(outcomes) > 1:
        document["scenarios"] = {o.name: o.summary() for o in outcomes}
    return document


def dumps_line(document: Mapping[str, Any]) -> str:
    return json.dumps(_finite(document), separators=(",", ":"), sort_keys=False)


def _finite(value: Any) -> Any:
    """NaN and infinities are not JSON: write them as null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


# ---------------------------------------------------------------- terminal


def print_tables(console: Console, outcomes: Sequence[ScenarioOutcome]) -> None:
    for outcome in outcomes:
        console.print(scenario_table(outcome))


def scenario_table(outcome: ScenarioOutcome) -> Table:
    bound = outcome.optimum.profit_usd if outcome.optimum is not None else None
    table = Table(title=f"Backtest, scenario {outcome.name}", show_lines=False)
    for header in (
        "policy", "profit $", "of optimum", "mining $", "AI $", "power $", "mine MWh",
        "AI MWh", "served", "missed (int.)", "int. p50/p99 s",
    ):
        table.add_column(header, justify="left" if header == "policy" else "right")
    ranked = sorted(outcome.results, key=lambda r: -r.profit_usd)
    for r in ranked:
        fraction = f"{r.profit_usd / bound:.1%}" if bound else "-"
        latency = r.interactive_latency_s
        table.add_row(
            r.policy,
            _money(r.profit_usd),
            fraction,
            _money(r.mining_revenue_usd),
            _money(r.ai_revenue_usd),
            _money(r.power_cost_usd),
            f"{r.mining_mwh:,.0f}",
            f"{r.ai_busy_mwh + r.ai_idle_mwh:,.0f}",
            f"{r.requests_served:,.0f}",
            f"{r.deadline_misses:,.0f} ({r.interactive_misses:,.0f})",
            f"{latency.get('p50', 0.0):.2f}/{latency.get('p99', 0.0):.2f}",
        )
    if outcome.optimum is not None:
        o = outcome.optimum
        table.add_row(
            "[bold]hindsight optimum[/bold]",
            _money(o.profit_usd),
            "100.0%",
            _money(o.mining_revenue_usd),
            _money(o.ai_revenue_usd),
            _money(o.power_cost_usd),
            f"{o.mining_mwh:,.0f}",
            f"{o.ai_busy_mwh + o.ai_idle_mwh:,.0f}",
            "-",
            "-",
            "-",
        )
    return table


def _money(usd: float) -> str:
    return f"{usd:,.0f}"


# ---------------------------------------------------------------- Markdown + charts


def write_report(
    directory: Path,
    outcomes: Sequence[ScenarioOutcome],
    meta: Mapping[str, Any],
    focus_policy: str = "hashserve",
) -> Path:
    """Write report.md, results.json and PNG charts into `directory`; returns the report's path."""
    import matplotlib

    matplotlib.use("Agg")
    directory.mkdir(parents=True, exist_ok=True)
    document = json_document(outcomes, meta)
    (directory / "results.json").write_text(json.dumps(_finite(document), indent=2) + "\n")
    lines = ["# hashserve backtest", ""]
    lines += [f"- {key}: {_inline(value)}" for key, value in meta.items()]
    lines.append("")
    for outcome in outcomes:
        lines += _scenario_section(directory, outcome, focus_policy)
    lines += [
        "## How to read this",
        "",
        "- Profit = mining revenue (R_mine x MWh mined) + AI revenue (tier price x tokens served)"
        " - power cost (price x every MWh drawn).",
        "- The hindsight optimum is a mixed-integer program with perfect foresight (HiGHS),"
        " mining in the sites' whole curtailment blocks, solved in windows whose boundary credits"
        " keep it an upper bound (and at HiGHS's dual bound, so an unproven branch and bound does"
        " too); every policy's fraction is its profit over that bound.",
        "- Interactive latency is the run time the placer estimates (tokens / GPU rate); work that"
        " found no GPU in its hour counts as a deadline miss instead. \"over target\" counts"
        " served interactive requests slower than the tier's latency target (CPU nodes).",
        "- Served, missed and carried are requests (the traces scaled to the rate above). Carried"
        " past end: flex work still queued, not yet due, when the period ended (earns nothing).",
        "- GPU throughput per kind and model: see `tokens_per_s` above and"
        " scheduler/backtest/throughput.py (GPU figures are assumptions, not measurements).",
        "",
    ]
    path = directory / "report.md"
    path.write_text("\n".join(lines))
    return path


def _inline(value: Any) -> str:
    if isinstance(value, Mapping | list | tuple):
        return "`" + json.dumps(_finite(value)) + "`"
    return str(value)


def _scenario_section(
    directory: Path, outcome: ScenarioOutcome, focus_policy: str
) -> list[str]:
    bound = outcome.optimum.profit_usd if outcome.optimum is not None else None
    lines = [f"## Scenario `{outcome.name}`", ""]
    lines.append(
        "| policy | profit $ | of optimum | mining $ | AI $ | power $ | mining MWh | AI MWh "
        "| served | missed (interactive) | carried past end | interactive p50 / p95 / p99 s "
        "| interactive over target |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in sorted(outcome.results, key=lambda r: -r.profit_usd):
        lat = r.interactive_latency_s
        lines.append(
            f"| {r.policy} | {_money(r.profit_usd)} | "
            f"{(r.profit_usd / bound if bound else float('nan')):.2%} | "
            f"{_money(r.mining_revenue_usd)} | {_money(r.ai_revenue_usd)} | "
            f"{_money(r.power_cost_usd)} | {r.mining_mwh:,.0f} | "
            f"{r.ai_busy_mwh + r.ai_idle_mwh:,.0f} | {r.requests_served:,.0f} | "
            f"{r.deadline_misses:,.0f} ({r.interactive_misses:,.0f}) | "
            f"{r.carried_past_end_requests:,.0f} | "
            f"{lat.get('p50', 0):.2f} / {lat.get('p95', 0):.2f} / {lat.get('p99', 0):.2f} | "
            f"{r.latency_target_misses:,.0f} |"
        )
    if outcome.optimum is not None:
        o = outcome.optimum
        lines.append(
            f"| hindsight optimum | {_money(o.profit_usd)} | 100% | {_money(o.mining_revenue_usd)}"
            f" | {_money(o.ai_revenue_usd)} | {_money(o.power_cost_usd)} | {o.mining_mwh:,.0f} | "
            f"{o.ai_busy_mwh + o.ai_idle_mwh:,.0f} | - | - | - | - | - |"
        )
        lines += [
            "",
            f"Optimum: {o.windows} window(s) of {o.window_h} h, boundary credit "
            f"${o.boundary_credit_usd:,.0f}, solved in {o.solve_s:.1f} s.",
        ]
    lines.append("")
    slug = _slug(outcome.name)
    profit_png = f"cumulative_profit_{slug}.png"
    _plot_cumulative(directory / profit_png, outcome)
    lines += [f"![cumulative profit per policy]({profit_png})", ""]
    focus = next((r for r in outcome.results if r.policy == focus_policy), None)
    if focus is None and outcome.results:
        focus = outcome.results[0]
    if focus is not None and outcome.world is not None:
        modes_png = f"price_vs_mode_{slug}_{_slug(focus.policy)}.png"
        _plot_modes(directory / modes_png, outcome.world, focus)
        lines += [f"![price vs mode per site, {focus.policy}]({modes_png})", ""]
    return lines


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


def _hours_axis(world: World | None, hours: int) -> np.ndarray:
    """Hour starts as datetime64 (UTC) when the world is known, else hour numbers."""
    if world is None:
        return np.arange(hours)
    return (int(world.start_s) + np.arange(hours) * 3600).astype("datetime64[s]")


def _plot_cumulative(path: Path, outcome: ScenarioOutcome) -> None:
    """Cumulative profit per policy, and below it each policy's shortfall against the optimum
    (the policies lie close together when mining dominates, the shortfall shows them apart)."""
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 2]})
    hours = outcome.results[0].profit_by_hour_usd.size if outcome.results else 0
    x = _hours_axis(outcome.world, hours)
    optimum = outcome.optimum
    best = (
        np.cumsum(optimum.profit_by_hour_usd)
        if optimum is not None and optimum.profit_by_hour_usd.size == hours
        else None
    )
    for r in sorted(outcome.results, key=lambda r: -r.profit_usd):
        cumulative = np.cumsum(r.profit_by_hour_usd)
        top.plot(x, cumulative / 1e6, label=r.policy, linewidth=1.2)
        if best is not None:
            bottom.plot(x, (cumulative - best) / 1e6, label=r.policy, linewidth=1.2)
    if best is not None:
        top.plot(x, best / 1e6, label="hindsight optimum", color="black", linestyle="--",
                 linewidth=1.0)
        bottom.axhline(0.0, color="black", linestyle="--", linewidth=1.0)
    top.set_ylabel("cumulative profit, million USD")
    top.set_title(f"Cumulative profit per policy ({outcome.name})")
    top.legend(loc="upper left", fontsize=8)
    top.grid(alpha=0.3)
    bottom.set_ylabel("minus the optimum, million USD")
    bottom.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _chart_sites(world: World) -> list[int]:
    """Up to MAX_SITE_CHARTS sites: the one with the most volatile price in each region first."""
    volatility = world.price_usd_per_mwh.std(axis=1)
    picked: list[int] = []
    for region in dict.fromkeys(world.site_regions):
        members = [s for s in range(world.sites) if world.site_regions[s] == region]
        picked.append(max(members, key=lambda s: (volatility[s], -s)))
    rest = sorted(
        (s for s in range(world.sites) if s not in picked), key=lambda s: (-volatility[s], s)
    )
    return (picked + rest)[:MAX_SITE_CHARTS]


def _plot_modes(path: Path, world: World, result: PolicyResult) -> None:
    import matplotlib.pyplot as plt

    sites = _chart_sites(world)
    fig, axes = plt.subplots(len(sites), 1, figsize=(11, 2.3 * len(sites)), sharex=True)
    axes_list = list(np.atleast_1d(axes))
    x = _hours_axis(world, world.hours)
    for ax, s in zip(axes_list, sites, strict=True):
        mining = result.mining_mw[s].astype(float)
        ai = result.ai_mw[s].astype(float)
        idle = np.maximum(world.cap_mw[s] - mining - ai, 0.0)
        ax.stackplot(
            x, mining, ai, idle, labels=("mining MW", "AI MW", "curtailed / unused MW"),
            colors=("#f2a900", "#4a7bd0", "#dddddd"), step="post",
        )
        ax.set_ylabel("MW")
        ax.set_title(f"{world.site_names[s]} ({world.site_regions[s]})", fontsize=9)
        twin = ax.twinx()
        twin.plot(x, world.price_usd_per_mwh[s], color="black", linewidth=0.6, label="price")
        twin.plot(
            x, world.r_mine_usd_per_mwh[s], color="#b00020", linewidth=0.6, linestyle=":",
            label="R_mine",
        )
        twin.set_ylabel("$/MWh")
        high = float(np.percentile(world.price_usd_per_mwh[s], 99.5))
        twin.set_ylim(min(float(world.price_usd_per_mwh[s].min()), 0.0), max(high, 1.0) * 1.2)
    axes_list[0].legend(loc="upper left", fontsize=7, ncol=3)
    fig.suptitle(f"Price vs mode per site: {result.policy} ({result.scenario})")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
