"""The sites of a placement call as arrays: each node's opportunity price, and every outlook window.

What it decides: nothing new. It answers, with array operations, the two questions the scan asks
of the site views in Python: what power costs at a node's site now (the opportunity price; 0 for
a site with no view, as `SiteView`'s default), and which later window is cheapest for a flex job
(`rules.best_window`, the same minimum of (energy USD, start) over the same windows).

Built once per set of site views: `for_index` keeps the table on the node index and reuses it
while the mapping holds the very same `SiteView` objects (frozen, so the same object means the
same prices); checking that is one identity comparison per site.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping

import numpy as np

from scheduler.core.placement.index import NodeIndex
from scheduler.core.placement.rules import latest_start_s
from scheduler.core.placement.scores import ScoringProfile, marginal_energy_mwh
from scheduler.core.placement.types import JobRequest, NodeView, SiteView


class NotFinite(ValueError):
    """A number the array path cannot treat exactly as the scan does; the caller scans."""


class SiteTable:
    def __init__(self, sites: Mapping[str, SiteView], site_names: list[str]) -> None:
        self.keys = list(sites.keys())
        self.views = list(sites.values())
        self.n_site_names = len(site_names)
        prices = []
        for name in site_names:
            view = sites.get(name)
            prices.append(0.0 if view is None else view.opportunity_price_usd_per_mwh)
        # Opportunity price by the index's site code.
        self.price_by_site = np.array(prices, dtype=np.float64)
        # The outlook windows, gathered on first use (only flex jobs look at them).
        self._windows: tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int]] | None = None
        self.finite = bool(np.isfinite(self.price_by_site).all())

    def _gather_windows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
        """(start_s, opportunity price, region code) per window, and the region codes."""
        if self._windows is None:
            starts: list[float] = []
            prices: list[float] = []
            regions: list[int] = []
            region_code: dict[str, int] = {}
            for view in self.views:
                code = region_code.setdefault(view.region, len(region_code))
                for window in view.outlook:
                    starts.append(window.start_s)
                    prices.append(window.opportunity_price_usd_per_mwh)
                    regions.append(code)
            self._windows = (
                np.array(starts, dtype=np.float64),
                np.array(prices, dtype=np.float64),
                np.array(regions, dtype=np.int64),
                region_code,
            )
        if not (np.isfinite(self._windows[0]).all() and np.isfinite(self._windows[1]).all()):
            # The scan compares NaN the way Python does (a NaN start is not skipped there).
            raise NotFinite("an outlook window is not a finite number")
        return self._windows

    @classmethod
    def for_index(cls, index: NodeIndex, sites: Mapping[str, SiteView]) -> SiteTable:
        """The table for these sites and this index, reused from the last call when still valid."""
        cached = index.site_cache
        if (
            isinstance(cached, SiteTable)
            and cached.n_site_names == len(index.site_names)
            and cached.still_describes(sites)
        ):
            return cached
        table = cls(sites, index.site_names)
        index.site_cache = table
        return table

    def still_describes(self, sites: Mapping[str, SiteView]) -> bool:
        return (
            len(sites) == len(self.views)
            and all(map(operator.is_, sites.values(), self.views))
            and list(sites.keys()) == self.keys
        )

    def best_window(
        self, job: JobRequest, node: NodeView, now_s: float, profile: ScoringProfile
    ) -> tuple[float, float] | None:
        """As `rules.best_window`: the minimum (energy USD, start) over the allowed windows."""
        starts_s, prices, regions, region_code = self._gather_windows()
        if starts_s.size == 0:
            return None
        latest_s = latest_start_s(job, node, profile)
        ok = (starts_s > now_s) & (starts_s <= latest_s)
        if job.allowed_regions:
            in_region = np.zeros(regions.size, dtype=bool)
            for region in job.allowed_regions:
                code = region_code.get(region)
                if code is not None:
                    in_region |= regions == code
            ok &= in_region
        chosen = np.flatnonzero(ok)
        if chosen.size == 0:
            return None
        # energy_usd(): marginal_energy_mwh(job, node) * price, the same product per window.
        cost = marginal_energy_mwh(job, node, profile) * prices[chosen]
        cheapest = cost.min()
        start_s = starts_s[chosen][cost == cheapest].min()
        return float(cheapest), float(start_s)
