"""Rebuild `btc_daily_facts_2020_2026.csv` from the shared data folder (a maintainer's tool).

The shared Bitcoin files come from repositories with no licence, so the project ships only the
daily facts it needs (see ATTRIBUTION.md): the UTC date, the CoinDesk daily close in USD, the
difficulty in force at 00:00 UTC (from mempool.space), and the total fees paid that day in BTC
(Blockchain.com, 2023-04-30 to 2024-04-27 only). Values are copied as written, not recomputed.

Run: `python -m scheduler.data.build_btc_facts [SHARED_DATA_DIR]` (default: $HASHSERVE_SHARED_DATA
or ../shared/data next to the repository).
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

OUT_NAME = "btc_daily_facts_2020_2026.csv"
HEADER = ("date_utc", "btc_usd_close", "difficulty", "fees_btc_per_day")


def _shared_dir() -> Path:
    env = os.environ.get("HASHSERVE_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"


def build(shared_dir: Path, out_path: Path) -> int:
    """Write the facts file; returns the number of data rows."""
    with open(shared_dir / "btc_blockchaincom_fees_revenue_2023_2024.csv", newline="") as f:
        fees = {r["date_utc"]: r["fees_btc_per_day"] for r in csv.DictReader(f)}
    rows: list[tuple[str, str, str, str]] = []
    with open(shared_dir / "btc_daily_price_hashrate_2020_2026.csv", newline="") as f:
        for r in csv.DictReader(f):
            day = r["date_utc"]
            rows.append((day, r["btc_usd_close"], r["difficulty"], fees.get(day, "")))
    with open(out_path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(HEADER)
        writer.writerows(rows)
    return len(rows)


def main(argv: list[str]) -> int:
    shared = Path(argv[1]) if len(argv) > 1 else _shared_dir()
    n = build(shared, Path(__file__).resolve().parent / OUT_NAME)
    print(f"wrote {n} rows to {OUT_NAME}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
