"""Data files shipped inside the package, so a fresh install replays real markets and traces.

What is here and why it may be (details and citations in ATTRIBUTION.md):
- `elec_prices_hourly_12regions_2020_2024.csv.gz`: hourly day-ahead/real-time power prices of
  12 zones, native currency per MWh (HewlettPackard/green-dcc, MIT), copied verbatim.
- `btc_daily_facts_2020_2026.csv`: daily Bitcoin facts only (close in USD, difficulty, fees per
  day), from sources with no licence stated; facts, with attribution (see `build_btc_facts`).
- `azure_llm_2023_code.csv`, `azure_llm_2023_conv.csv`: Azure LLM inference traces (CC-BY-4.0,
  Patel et al., "Splitwise", ISCA 2024), copied verbatim.

This module only says where the files are; reading them is `scheduler.feeds.history`'s job.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

PRICE_FILE = "elec_prices_hourly_12regions_2020_2024.csv.gz"
BTC_FACTS_FILE = "btc_daily_facts_2020_2026.csv"
AZURE_CODE_TRACE_FILE = "azure_llm_2023_code.csv"
AZURE_CONV_TRACE_FILE = "azure_llm_2023_conv.csv"
ATTRIBUTION_FILE = "ATTRIBUTION.md"


def data_path(name: str) -> Path:
    """Path of a shipped file. The package is installed as plain files (not zipped), so the
    resource is a real path; anything else is refused rather than silently copied to a temp dir."""
    resource = resources.files(__name__).joinpath(name)
    path = Path(str(resource))
    if not path.is_file():
        raise FileNotFoundError(f"shipped data file {name!r} not found at {path}")
    return path


def price_file() -> Path:
    """Hourly power prices, 12 zones, 2020-2024 (native currency per MWh, hour start UTC)."""
    return data_path(PRICE_FILE)


def btc_facts_file() -> Path:
    """Daily Bitcoin close (USD), difficulty at 00:00 UTC and fees per day (BTC)."""
    return data_path(BTC_FACTS_FILE)


def azure_trace_paths() -> tuple[Path, Path]:
    """The Azure 2023 LLM inference traces: (code, conversation)."""
    return data_path(AZURE_CODE_TRACE_FILE), data_path(AZURE_CONV_TRACE_FILE)


def attribution_file() -> Path:
    return data_path(ATTRIBUTION_FILE)
