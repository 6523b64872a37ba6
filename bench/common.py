"""What every benchmark shares: arguments, timing, percentiles, the results file and the last line.

Each benchmark is one command that prints its figures side by side (hashserve next to a baseline
measured in the same run) and, last, one line of JSON. The same JSON is written to
`bench/results/<bench>-<UTC time>-<commit>.json` (gitignored) so that runs on two commits can be
compared with any JSON tool. `--smoke` shrinks every size so a run takes seconds (CI runs that
through tests/bench/test_bench_smoke.py); its figures mean nothing, only that the code runs.

Also here: the synthetic world the placement and scale benchmarks share (sites over the four
regions on the 12 price zones of the shipped price file, and the market at one real hour of it),
so both measure the same kind of fleet.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import math
import os
import platform
import random
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS_DIR = ROOT / "bench" / "results"

# ----- arguments, timing, output -----------------------------------------------------------------


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark takes."""
    text = doc or ""
    p = argparse.ArgumentParser(
        description=text.splitlines()[0] if text else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--smoke", action="store_true", help="tiny sizes, runs in seconds (CI)")
    p.add_argument(
        "--results-dir", type=Path, default=RESULTS_DIR, help="where the JSON result file goes"
    )
    p.add_argument("--no-save", action="store_true", help="print only; write no results file")
    p.add_argument("--seed", type=int, default=7, help="seed of every random draw")
    return p


def pin_to_one_core() -> int | None:
    """Run on one CPU (the targets are per core); returns the CPU, or None where unsupported."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    cpu = cpus[-1]
    os.sched_setaffinity(0, {cpu})
    return cpu


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) by linear interpolation between order statistics (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summary_us(samples_s: Sequence[float]) -> dict[str, float]:
    """Mean, p50, p90, p99 and max of timings given in seconds, in microseconds."""
    us = [s * 1e6 for s in samples_s]
    return {
        "n": len(us),
        "mean_us": round(sum(us) / len(us), 3) if us else math.nan,
        "p50_us": round(percentile(us, 0.50), 3),
        "p90_us": round(percentile(us, 0.90), 3),
        "p99_us": round(percentile(us, 0.99), 3),
        "max_us": round(max(us), 3) if us else math.nan,
    }


def time_each(calls: Sequence[Callable[[], object]]) -> list[float]:
    """Seconds each call took, one after the other. Garbage is collected first, not during: a
    collection pause inside a call is part of what that call costs and stays in the figures."""
    gc.collect()
    clock = time.perf_counter
    out = []
    for call in calls:
        t0 = clock()
        call()
        out.append(clock() - t0)
    return out


def commit() -> str:
    """The checked-out commit (with '+dirty' when the tree has changes), or 'unknown'."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True,
            text=True, timeout=10, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return rev + ("+dirty" if dirty else "")


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
    }


def finish(bench: str, args: argparse.Namespace, results: Mapping[str, Any]) -> dict[str, Any]:
    """Print the JSON line (last line of output) and save it under the results folder."""
    now = dt.datetime.now(dt.UTC)
    rev = commit()
    doc: dict[str, Any] = {
        "bench": bench,
        "smoke": bool(args.smoke),
        "commit": rev,
        "utc": now.isoformat(timespec="seconds"),
        "machine": machine(),
        **results,
    }
    if not args.no_save:
        folder = Path(args.results_dir)
        folder.mkdir(parents=True, exist_ok=True)
        stamp = now.strftime("%Y%m%dT%H%M%SZ")
        name = f"{bench}{'-smoke' if args.smoke else ''}-{stamp}-{rev.replace('+', '_')}.json"
        (folder / name).write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc), flush=True)
    return doc


def table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    """A plain left/right aligned text table (text left, numbers right)."""
    cells = [[str(h) for h in header]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for r in cells:
        parts = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append("  ".join(parts))
    return "\n".join(lines)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.1f}"
    return str(value)


# ----- the synthetic world -----------------------------------------------------------------------
# The 12 price zones of the shipped price file, by region (scheduler/core/market.py
# PRICE_ZONE_CURRENCY). Sites are spread over regions in these proportions, a choice close to where
# large public miners run (mostly North America).
ZONES_BY_REGION: Mapping[str, tuple[str, ...]] = {
    "north_america": ("US-TEX-ERCO", "US-MIDA-PJM", "US-NY-NYIS", "US-CAL-CISO", "CA-ON"),
    "europe": ("DE-LU", "FR", "ES", "NL"),
    "south_america": ("BR",),
    "asia_pacific": ("AU-NSW", "JP-TK"),
}
REGION_SHARE: Mapping[str, float] = {
    "north_america": 0.5, "europe": 0.25, "south_america": 0.1, "asia_pacific": 0.15,
}
# ASIC efficiencies in J/TH: Bitmain datasheets (S21 Pro 15, S21 17.5, S19 XP 21.5, S19j Pro 29.5),
# the mixes scheduler/fleet/example_fleet.yaml uses.
ASIC_J_PER_TH = (15.0, 17.5, 21.5, 29.5)
POOL_FEE = 0.02  # a choice within published FPPS pool fees (0-4 %)


@dataclass(frozen=True)
class SitePlan:
    name: str
    region: str
    zone: str
    efficiency_j_per_th: float
    # Interconnect sized to the ASICs: AI power is taken from mining (opportunity includes R_mine).
    at_cap: bool


def plan_sites(n_sites: int, rng: random.Random) -> list[SitePlan]:
    """`n_sites` sites over the four regions (at least one per region), each on a price zone."""
    regions = list(REGION_SHARE)
    counts = {r: max(1, round(n_sites * REGION_SHARE[r])) for r in regions}
    counts["north_america"] += n_sites - sum(counts.values())
    sites = []
    for region in regions:
        zones = ZONES_BY_REGION[region]
        for k in range(counts[region]):
            sites.append(
                SitePlan(
                    name=f"{region[:2]}-{k:04d}",
                    region=region,
                    zone=zones[k % len(zones)],
                    efficiency_j_per_th=rng.choice(ASIC_J_PER_TH),
                    at_cap=rng.random() < 0.5,
                )
            )
    return sites


@dataclass(frozen=True)
class MarketHour:
    """Real prices of one hour (USD/MWh per zone, the following hours too) and that day's
    hashprice, from the files shipped in scheduler/data."""

    t_s: float
    price_usd_per_mwh: Mapping[str, float]
    ahead_usd_per_mwh: Mapping[str, tuple[float, ...]]  # the next hours, per zone
    hashprice_usd_per_phs_day: float
    btc_usd: float
    difficulty: float
    fees_btc_per_block: float


def market_hour(rng: random.Random, hours_ahead: int = 24) -> MarketHour:
    """A random hour of 2023-2024 where every zone has a price for it and the next hours."""
    from scheduler.core.economics import (
        block_subsidy_btc_at,
        fees_btc_per_block_from_daily,
        hashprice_usd_per_phs_day,
    )
    from scheduler.data import btc_facts_file, price_file
    from scheduler.feeds.history import load_btc_daily, load_price_table

    table_ = load_price_table(price_file())
    usd = table_.usd()
    btc = load_btc_daily(btc_facts_file())
    first = int(table_.hours * 0.6)  # about 2023 onwards
    while True:
        i = rng.randrange(first, table_.hours - hours_ahead - 1)
        window = usd[i : i + hours_ahead + 1]
        day = btc.row_at(float(table_.t_s[i]))
        if day is None or not bool((window == window).all()):  # NaN != NaN
            continue
        close, difficulty = float(btc.close_usd[day]), float(btc.difficulty[day])
        fees_day = float(btc.fees_btc_per_day[day])
        if not (math.isfinite(close) and math.isfinite(difficulty) and math.isfinite(fees_day)):
            continue
        t_s = float(table_.t_s[i])
        fees = fees_btc_per_block_from_daily(fees_day)
        return MarketHour(
            t_s=t_s,
            price_usd_per_mwh={z: float(window[0, j]) for j, z in enumerate(table_.zones)},
            ahead_usd_per_mwh={
                z: tuple(float(x) for x in window[1:, j]) for j, z in enumerate(table_.zones)
            },
            hashprice_usd_per_phs_day=hashprice_usd_per_phs_day(
                close, difficulty, fees, block_subsidy_btc_at(t_s)
            ),
            btc_usd=close,
            difficulty=difficulty,
            fees_btc_per_block=fees,
        )


def trace_tokens(rng: random.Random, n: int) -> list[tuple[int, int]]:
    """(context, generated) token counts of `n` requests drawn from the shipped Azure 2023 traces
    (CC-BY-4.0, Patel et al., "Splitwise", ISCA 2024)."""
    import csv

    from scheduler.data import azure_trace_paths

    rows: list[tuple[int, int]] = []
    for path in azure_trace_paths():
        with open(path, newline="") as fh:
            for rec in csv.DictReader(fh):
                rows.append((int(rec["ContextTokens"]), int(rec["GeneratedTokens"])))
    return [rng.choice(rows) for _ in range(n)]
