"""The mine-or-serve arithmetic: hashprice, what a MWh earns when it mines, and what it costs AI.

Pure functions on plain numbers (USD, MW, MWh, PH/s). This module decides nothing; the planner
(`scheduler.core.planner`) and the placer compare the numbers it returns. Currency conversion is
the feeds' job: every price that reaches here is already in USD.

Sources of the constants:
- Difficulty to hashrate, `H = difficulty * 2**32 / 600`: a block needs on average
  `difficulty * 2**32` hashes (the difficulty-1 target is 2**224 of a 2**256 space, Bitcoin Core
  `GetBlockProof`) and the protocol targets one block every 600 s (`nPowTargetSpacing`).
- 144 blocks a day: 86,400 s / 600 s.
- Subsidy halvings every 210,000 blocks (`nSubsidyHalvingInterval`), at blocks 210,000 (2012-11-28),
  420,000 (2016-07-09), 630,000 (2020-05-11) and 840,000 (2024-04-20), UTC dates of the blocks.
- A fleet of `e` J/TH draws `e` W per TH/s, so 1 PH/s draws `e` kW and uses `24 * e / 1000` MWh a
  day (DESIGN.md, "The economics").
"""

from __future__ import annotations

import datetime as dt
import math

# Protocol: expected seconds between blocks (Bitcoin Core consensus nPowTargetSpacing = 600 s).
BLOCK_INTERVAL_S = 600.0
# 86,400 s a day / 600 s a block.
BLOCKS_PER_DAY = 144.0
# Hashes per unit of difficulty: the difficulty-1 target is 0xFFFF * 2**208 ~ 2**224 (Bitcoin Core).
HASHES_PER_DIFFICULTY = 2.0**32

# First UTC day of each subsidy era (block 210,000 * k), newest first, with the subsidy in BTC.
# Sources: the dates of blocks 210,000 / 420,000 / 630,000 / 840,000 (any block explorer) and
# `GetBlockSubsidy` (50 BTC halved every 210,000 blocks). The next halving (block 1,050,000) is
# expected in 2028 but its day is not known yet, so 3.125 BTC holds until this table is extended.
_SUBSIDY_ERAS: tuple[tuple[dt.date, float], ...] = (
    (dt.date(2024, 4, 20), 3.125),
    (dt.date(2020, 5, 11), 6.25),
    (dt.date(2016, 7, 9), 12.5),
    (dt.date(2012, 11, 28), 25.0),
    (dt.date(2009, 1, 3), 50.0),
)


def network_hashrate_hs(difficulty: float) -> float:
    """Network hashrate in H/s implied by a difficulty (hashes per block / seconds per block)."""
    return difficulty * HASHES_PER_DIFFICULTY / BLOCK_INTERVAL_S


def block_subsidy_btc(day: dt.date) -> float:
    """Block subsidy in BTC on a UTC day; on a halving day the new (lower) subsidy is used.

    The halving block falls part-way through its day; the whole day gets the new subsidy, as the
    shipped data's derived `block_subsidy_btc` column does.
    """
    for first_day, subsidy_btc in _SUBSIDY_ERAS:
        if day >= first_day:
            return subsidy_btc
    return 0.0  # before the genesis block


def block_subsidy_btc_at(t_s: float) -> float:
    """Block subsidy in BTC at a Unix time (UTC)."""
    return block_subsidy_btc(dt.datetime.fromtimestamp(t_s, tz=dt.UTC).date())


def hashprice_usd_per_phs_day(
    btc_usd: float, difficulty: float, fees_btc_per_block: float, subsidy_btc: float
) -> float:
    """Expected USD one PH/s earns a day: the day's block rewards shared by the network's PH/s.

    `144 * (subsidy + fees) * btc_usd / (H / 1e15)`, before pool fees.
    Worked example: difficulty 1e14 gives H = 1e14 * 2**32 / 600 = 7.158e20 H/s = 715,828 PH/s;
    at $60,000 and 3.125 BTC with no fees, 144 * 3.125 * 60,000 / 715,828 = $37.72 per PH/s-day.
    """
    hashrate_phs = network_hashrate_hs(difficulty) / 1e15
    if hashrate_phs <= 0.0:
        raise ValueError(f"difficulty must be > 0, got {difficulty!r}")
    return BLOCKS_PER_DAY * (subsidy_btc + fees_btc_per_block) * btc_usd / hashrate_phs


def mwh_per_phs_day(efficiency_j_per_th: float) -> float:
    """Energy one PH/s uses a day: 1 PH/s = 1000 TH/s at e J/TH = e kW; times 24 h = 0.024 e MWh."""
    return 0.024 * efficiency_j_per_th


def asic_power_mw(hashrate_phs: float, efficiency_j_per_th: float) -> float:
    """Power of a fleet: PH/s * 1000 TH/PH * e W/TH = PH/s * e kW; /1000 for MW."""
    return hashrate_phs * efficiency_j_per_th / 1000.0


def mining_revenue_usd_per_mwh(
    hashprice_usd_per_phs_day: float, efficiency_j_per_th: float, pool_fee: float
) -> float:
    """R_mine: USD a MWh earns when it mines, after the pool's fee.

    `hashprice * (1 - pool_fee) / (0.024 * e)`. Mining pays while the power price is below this.
    Worked example (DESIGN.md): $40/PH/day at 17.5 J/TH, no fee: 40 / 0.42 = $95.24/MWh.
    """
    if efficiency_j_per_th <= 0.0:
        raise ValueError(f"efficiency_j_per_th must be > 0, got {efficiency_j_per_th!r}")
    return hashprice_usd_per_phs_day * (1.0 - pool_fee) / mwh_per_phs_day(efficiency_j_per_th)


def opportunity_price_usd_per_mwh(
    price_usd_per_mwh: float,
    r_mine_usd_per_mwh: float,
    at_cap: bool,
    block_share: float = 1.0,
) -> float:
    """What one more MWh given to AI at a site really costs.

    With spare capacity under the site's cap it costs the power price. At the cap it is taken from
    the ASICs, so it also forgoes mining's margin: the cost is `max(price, R_mine)` (if mining was
    losing money at this price it would not be running, and the price alone is the cost).

    ASICs stop in whole blocks. Where the site's GPUs can use only part of the block they stop
    (`block_share`: the GPUs' busy power over the block's, at most 1), the block's whole margin
    is lost for that part: the cost is `price + max(R_mine - price, 0) / block_share`. At a site
    whose interconnect is sized to its ASICs, 0.2 MW of GPUs under a 2.5 MW block (share 0.08)
    pay 12.5 times mining's margin on every MWh they use.

    Negative prices pass through: with spare capacity, AI is paid to consume.
    """
    if not at_cap:
        return price_usd_per_mwh
    if not 0.0 < block_share <= 1.0:
        raise ValueError(f"block_share must be in (0, 1], got {block_share!r}")
    return price_usd_per_mwh + max(r_mine_usd_per_mwh - price_usd_per_mwh, 0.0) / block_share


def block_share(gpu_mw: float, block_mw: float) -> float:
    """The part of a stopped ASIC block that `gpu_mw` of GPUs can use (1 without blocks)."""
    if block_mw <= 0.0 or gpu_mw >= block_mw:
        return 1.0
    return max(gpu_mw, 1e-6 * block_mw) / block_mw


def fees_btc_per_block_from_daily(fees_btc_per_day: float) -> float:
    """Average fee per block from a day's total, assuming the expected 144 blocks a day.

    Using 144 (not the day's actual block count) keeps the fee term on the same footing as the
    hashprice formula, which also assumes 144 blocks a day at the current difficulty.
    """
    return fees_btc_per_day / BLOCKS_PER_DAY


def is_finite(value: float | None) -> bool:
    """True for a real, finite number (not None, NaN or infinite)."""
    return value is not None and math.isfinite(value)
