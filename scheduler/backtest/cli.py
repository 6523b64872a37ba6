"""`hashserve backtest`: replay real prices, Bitcoin data and request traces through every policy.

What it decides: the command's options and defaults, and the order of the steps (read inputs,
build the worlds, run, show). The lead mounts `run_backtest_command` as `hashserve backtest`;
`app` runs it standalone (`python -m scheduler.backtest.cli`).

Defaults: the example fleet and the data shipped in scheduler/data (else ../shared/data), July
2024, the two Azure traces scaled to 60% of the fleet's GPU throughput with 30% interactive,
30% standard and 40% flex requests, the live scheduler's price outlook (the past week's mean at
each hour of day), every policy, the optimum in weekly windows, on Ray.
The table goes to stdout, progress to stderr; with --json the last line of stdout is one JSON
object.
"""

from __future__ import annotations

import sys
import time
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from scheduler.backtest.build import (
    MarketData,
    OutlookMode,
    build_world,
    generation_model,
    load_market,
    make_workload,
    scaled_fleet,
)
from scheduler.backtest.inputs import (
    InputError,
    Trace,
    default_btc_paths,
    default_prices_path,
    default_trace_paths,
    load_trace,
)
from scheduler.backtest.optimum import DEFAULT_WINDOW_H
from scheduler.backtest.policies import DEFAULT_POLICIES, POLICIES
from scheduler.backtest.report import dumps_line, json_document, print_tables, write_report
from scheduler.backtest.runner import PreparedScenario, run_all
from scheduler.backtest.scenarios import Scenario, parse_sweep
from scheduler.backtest.throughput import parse_throughput
from scheduler.backtest.workload import parse_tier_mix
from scheduler.core.fleet import Fleet

DEFAULT_START = "2024-07-01"
DEFAULT_END = "2024-07-31"
DEFAULT_TIER_MIX = "interactive=0.3,standard=0.3,flex=0.4"


# The command's options (typer reads the help from the annotations).
_FleetOpt = Annotated[Path | None, typer.Option(help="Fleet YAML (default: the example fleet).")]
_PricesOpt = Annotated[
    Path | None, typer.Option(help="Hourly price CSV: timestamp_utc and one column per zone.")
]
_BtcOpt = Annotated[Path | None, typer.Option(help="Bitcoin daily CSV (price, difficulty, fees).")]
_BtcFeesOpt = Annotated[Path | None, typer.Option(help="Extra daily fees CSV (fees_btc_per_day).")]
_TraceOpt = Annotated[
    list[Path] | None, typer.Option(help="Azure trace CSV (repeat for several).")
]
_StartOpt = Annotated[str, typer.Option(help="First day (UTC), YYYY-MM-DD.")]
_EndOpt = Annotated[str, typer.Option(help="Last day (UTC, inclusive), YYYY-MM-DD.")]
_RateOpt = Annotated[
    float | None, typer.Option(help="Requests per second (default: from --gpu-load).")
]
_LoadOpt = Annotated[
    float, typer.Option(help="Without --rate-rps: the share of the fleet's GPU throughput.")
]
_MixOpt = Annotated[
    str, typer.Option(help="Shares per tier: interactive=0.3,standard=0.3,flex=0.4.")
]
_DailyOpt = Annotated[float, typer.Option(help="Daily demand cycle, 0 (flat) to 1.")]
_ModelOpt = Annotated[
    str | None, typer.Option(help="Model the traces ask for (default: the fleet's LLM).")
]
_OutlookOpt = Annotated[OutlookMode, typer.Option(help="Price outlook the policies may read.")]
_PolicyOpt = Annotated[
    list[str] | None,
    typer.Option(
        help="Policies to run (repeat). Default: hashserve and the baselines; hashserve_live "
        "(the live scheduler core itself, minutes per month) runs only when named."
    ),
]
_SweepOpt = Annotated[
    str | None, typer.Option(help="What-if sweep: hashprice=0.8,1,1.2 | gpus=... | load=...")
]
_ThroughputOpt = Annotated[
    list[str] | None, typer.Option(help="KIND:MODEL=TOKENS_PER_S per accelerator (repeat).")
]
_WindowOpt = Annotated[
    int, typer.Option(help="Optimum window in hours (0: the whole period at once).")
]
_NoOptimumOpt = Annotated[
    bool, typer.Option("--no-optimum", help="Skip the hindsight optimum (a mixed-integer program).")
]
_NoRayOpt = Annotated[
    bool, typer.Option("--no-ray", help="Run in this process, one run after another.")
]
_JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object as the last line.")]
_ReportOpt = Annotated[
    Path | None, typer.Option(help="Write report.md, results.json and PNG charts here.")
]


class BacktestFailed(Exception):
    """A problem with the inputs or options, worded for the operator."""


def _load_fleet(path: Path | None) -> tuple[Fleet, str]:
    from scheduler.fleet import default_fleet_path, load_fleet

    source = path or default_fleet_path()
    return load_fleet(source), str(source)


def prepare(
    fleet: Fleet,
    fleet_source: str,
    market: MarketData,
    traces: list[Trace],
    scenarios: tuple[Scenario, ...],
    model_name: str | None,
    tier_mix: str,
    rate_rps: float | None,
    gpu_load: float,
    daily_amplitude: float,
    outlook: OutlookMode,
    throughput: dict[tuple[str, str], float],
) -> tuple[list[PreparedScenario], dict[str, Any]]:
    """Build each scenario's world and workload; returns them and what the report should say."""
    mix = parse_tier_mix(tier_mix)
    model = generation_model(fleet, model_name)
    prepared: list[PreparedScenario] = []
    base_rate: float | None = rate_rps
    for scenario in scenarios:
        world = build_world(
            scaled_fleet(fleet, scenario.gpu_scale), market, throughput, outlook,
            scenario.hashprice_scale, fleet_source,
        )
        if base_rate is None:
            # The rate comes from the unscaled fleet, so a GPU sweep changes capacity, not load.
            reference = build_world(fleet, market, throughput, outlook, 1.0, fleet_source)
            _, base_rate = make_workload(reference, traces, model, mix, None, gpu_load)
        workload, _ = make_workload(
            world, traces, model, mix, base_rate, gpu_load, daily_amplitude, scenario.load_scale
        )
        prepared.append(PreparedScenario(scenario.name, world, workload))
    meta = {
        "fleet": fleet_source,
        "sites": len(fleet.sites),
        "gpus": fleet.gpu_count,
        "asic_mw": round(fleet.asic_power_mw, 2),
        "hours": market.hours,
        "model": model.name,
        "requests_per_s": round(base_rate or 0.0, 3),
        "tier_mix": {t.value: round(v, 4) for t, v in mix.items()},
        "outlook": outlook.value,
        "tokens_per_s": {
            f"{pool.gpu_kind}:{model.name}": pool.tokens_per_s.get(model.name, 0.0)
            for pool in (prepared[0].world.pools if prepared else ())
        },
        "price_hours_filled": {k: v for k, v in market.prices.filled_hours.items() if v},
        "price_rows_missing": market.prices.missing_rows,
        "price_rows_merged": market.prices.merged_rows,
        "btc_fee_days": market.btc.fee_days,
    }
    return prepared, meta


def run_backtest_command(
    fleet: _FleetOpt = None,
    prices: _PricesOpt = None,
    btc: _BtcOpt = None,
    btc_fees: _BtcFeesOpt = None,
    trace: _TraceOpt = None,
    start: _StartOpt = DEFAULT_START,
    end: _EndOpt = DEFAULT_END,
    rate_rps: _RateOpt = None,
    gpu_load: _LoadOpt = 0.6,
    tier_mix: _MixOpt = DEFAULT_TIER_MIX,
    daily_amplitude: _DailyOpt = 0.0,
    model: _ModelOpt = None,
    outlook: _OutlookOpt = OutlookMode.LIVE,
    policy: _PolicyOpt = None,
    sweep: _SweepOpt = None,
    throughput: _ThroughputOpt = None,
    window_h: _WindowOpt = DEFAULT_WINDOW_H,
    no_optimum: _NoOptimumOpt = False,
    no_ray: _NoRayOpt = False,
    json_out: _JsonOpt = False,
    report: _ReportOpt = None,
) -> None:
    """Backtest hashserve and the baselines on real prices, Bitcoin data and request traces."""
    err = Console(stderr=True)
    try:
        code = _run(
            err, fleet, prices, btc, btc_fees, trace, start, end, rate_rps, gpu_load, tier_mix,
            daily_amplitude, model, outlook, policy, sweep, throughput, window_h, no_optimum,
            no_ray, json_out, report,
        )
    except (BacktestFailed, InputError, ValueError, KeyError) as exc:
        err.print(f"[bold red]backtest:[/bold red] {exc}")
        raise typer.Exit(2) from None
    if code:
        raise typer.Exit(code)


def _run(
    err: Console,
    fleet_path: Path | None,
    prices: Path | None,
    btc: Path | None,
    btc_fees: Path | None,
    traces: list[Path] | None,
    start: str,
    end: str,
    rate_rps: float | None,
    gpu_load: float,
    tier_mix: str,
    daily_amplitude: float,
    model: str | None,
    outlook: OutlookMode,
    policies: list[str] | None,
    sweep: str | None,
    throughput: list[str] | None,
    window_h: int,
    no_optimum: bool,
    no_ray: bool,
    json_out: bool,
    report: Path | None,
) -> int:
    began = time.perf_counter()
    try:
        first, last = date.fromisoformat(start), date.fromisoformat(end)
    except ValueError as exc:
        raise BacktestFailed(f"--start/--end: {exc}") from None
    names = list(policies or DEFAULT_POLICIES)
    unknown = [n for n in names if n not in POLICIES]
    if unknown:
        raise BacktestFailed(f"unknown policy {unknown[0]!r}; known: {', '.join(POLICIES)}")
    if not 0 < gpu_load <= 1.5:
        raise BacktestFailed("--gpu-load must be in (0, 1.5]")
    if rate_rps is not None and rate_rps < 0:
        raise BacktestFailed("--rate-rps must not be negative")
    if not 0 <= daily_amplitude <= 1:
        raise BacktestFailed("--daily-amplitude must be in [0, 1]")
    fleet, fleet_source = _load_fleet(fleet_path)
    default_btc, default_fees = default_btc_paths()
    btc_path = btc or default_btc
    fees_path = btc_fees if btc_fees is not None else (default_fees if btc is None else None)
    market = load_market(
        fleet, prices or default_prices_path(), btc_path, fees_path, first, last,
        day_ahead=outlook is OutlookMode.FILE,
    )
    loaded = [load_trace(p) for p in (traces or list(default_trace_paths()))]
    scenarios = parse_sweep(sweep)
    prepared, meta = prepare(
        fleet, fleet_source, market, loaded, scenarios, model, tier_mix, rate_rps, gpu_load,
        daily_amplitude, outlook, parse_throughput(throughput or []),
    )
    meta = {
        "period": f"{first.isoformat()}..{last.isoformat()}",
        **meta,
        "optimum_window_h": window_h or None,
        **({"outlook_day_ahead_zones": sorted(market.day_ahead_column)}
           if outlook is OutlookMode.FILE else {}),
        "ray": not no_ray,
    }
    outcomes = run_all(
        prepared, names, window_h or None, use_ray=not no_ray, with_optimum=not no_optimum,
        console=err,
    )
    meta["wall_s"] = round(time.perf_counter() - began, 2)
    out = Console(file=sys.stdout, width=200)
    print_tables(out, outcomes)
    if report is not None:
        path = write_report(report, outcomes, meta)
        err.print(f"report written to {path}")
    if json_out:
        sys.stdout.flush()
        print(dumps_line(json_document(outcomes, meta)), flush=True)
    return 0


app = typer.Typer(add_completion=False, help=run_backtest_command.__doc__)
app.command(name="backtest")(run_backtest_command)


if __name__ == "__main__":
    app()
