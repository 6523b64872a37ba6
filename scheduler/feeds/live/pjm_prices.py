"""PJM's prices from its Data Miner API, via gridstatus (`PJM`).

A site prices on its pnode (`settlement_point: 51288` in the fleet file, a pnode id), else on
`default_pnode` (51288, the Western Hub). Each poll reads today's real-time unverified 5-minute
LMPs of those pnodes (`rt_unverified_fivemin_lmps`, the freshest PJM publishes; the verified feed
lags by about 25 minutes): the newest interval is the price now. Data Miner needs a subscription
key (`pjm_api_key[_file]`), sent as a header. PJM's day-ahead prices are not read yet.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any
from zoneinfo import ZoneInfo

from scheduler.core.fleet import market_zone, settlement_point
from scheduler.feeds.live.poller import Fetched, library_error, newest, recent_prices

PJM_ZONE = "US-MIDA-PJM"
EASTERN = ZoneInfo("America/New_York")
MAX_INTERVAL_AGE_S = 3 * 300.0
WESTERN_HUB = "51288"


class PjmNodalPrices:
    def __init__(self, api_key: str, zones: Iterable[str], default_pnode: str = WESTERN_HUB,
                 data_miner_url: str | None = None, name: str = "pjm") -> None:
        import gridstatus.pjm as api

        self.pnodes = {
            z: settlement_point(z) or default_pnode for z in zones if market_zone(z) == PJM_ZONE
        }
        if not self.pnodes:
            raise ValueError(f"{name}: the fleet has no site in {PJM_ZONE}")
        bad = sorted(p for p in self.pnodes.values() if not p.isdigit())
        if bad:
            raise ValueError(f"{name}: a PJM settlement point is a pnode id, not {bad[0]!r}")
        if data_miner_url is not None:
            # gridstatus builds every Data Miner URL from this module attribute at call time.
            api.DATA_MINER_URL = data_miner_url.rstrip("/") + "/"
        self.client = api.PJM(api_key=api_key, retries=0)
        self.name = name

    def fetch(self, now_s: float) -> Fetched:
        import pandas as pd

        today = dt.datetime.fromtimestamp(now_s, tz=EASTERN).date()
        try:
            frame = self.client.get_lmp_real_time_unverified_5_min(
                pd.Timestamp(today, tz=EASTERN), locations=sorted(set(self.pnodes.values())),
            )
        except Exception as exc:  # gridstatus raises its own and bare exceptions
            raise library_error(self.name, "rt_unverified_fivemin_lmps", exc) from None
        rows: list[dict[str, Any]] = frame.to_dict("records")
        latest = newest(
            ((str(r["Location Id"]), float(r["Interval Start"].timestamp()), float(r["LMP"]))
             for r in rows),
            now_s,
        )
        prices, problems = recent_prices(self.pnodes, latest, now_s, MAX_INTERVAL_AGE_S,
                                         self.name, "USD")
        return Fetched(prices_by_zone=prices, problems=tuple(problems))
