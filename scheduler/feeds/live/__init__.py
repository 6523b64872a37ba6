"""Live market sources: the services miners price on, each polled on its own schedule.

`live_sources(settings, zones, clock)` builds the ones the settings name:
- Bitcoin: a Bitcoin Core node (`bitcoin_rpc_url`) or a mempool-style API (`mempool_api_url`)
  for difficulty, subsidy and fees; a spot price (`btc_usd_url`) for BTC/USD;
- prices: ENTSO-E day-ahead for the European bidding zones (`entsoe_token[_file]`); ERCOT's
  real-time and day-ahead settlement point prices for the Texas sites, each on its own point
  where the fleet file names one (`ercot_api_username`, `ercot_api_password[_file]`,
  `ercot_subscription_key[_file]`); the NEM's regional prices from AEMO's NEMWEB files
  (`aemo_nemweb_url`); JEPX's spot results (`jepx_spot_url`) and Brazil's hourly PLD from
  CCEE's open data (`ccee_datastore_url`, `ccee_pld_resource_id`); Ontario's zonal price from
  IESO's reports through gridstatus (`ieso_reports_url`); New York's zonal prices from NYISO's
  postings through gridstatus (`nyiso_postings_url`); PJM's pnode prices from Data Miner
  through gridstatus (`pjm_api_key[_file]`); California's nodal prices from CAISO's OASIS through
  gridstatus (`caiso_enabled`).
They sit between the HTTP endpoint and the replay in the layered feed, so a zone or a value no
live source has is still priced from the replay.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from pydantic import SecretStr

from scheduler.core.clock import Clock
from scheduler.feeds.live.bitcoin import (
    BitcoinCoreRpc,
    HashpriceIndexApi,
    MempoolApi,
    SpotPriceApi,
)
from scheduler.feeds.live.poller import (
    Adapter,
    Fetched,
    PolledSource,
    PublishedPrices,
    SourceError,
    SourceHealth,
    read_secret,
)
from scheduler.settings import SchedulerSettings

REAL_CLOCK_S_PER_HOUR = 3600.0
log = logging.getLogger("hashserve.feeds")


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def live_sources(
    settings: SchedulerSettings, zones: Iterable[str], clock: Clock
) -> list[PolledSource]:
    """The live sources the settings configure (none: the replay alone prices the market).

    Raises ValueError for a live source on a compressed market clock: a live price is the price
    of the real hour, and a compressed clock would play it as many hours.
    """
    zones = tuple(zones)
    adapters: list[tuple[Adapter, float]] = []
    if settings.bitcoin_rpc_url:
        adapters.append((BitcoinCoreRpc(
            settings.bitcoin_rpc_url,
            user=settings.bitcoin_rpc_user,
            password=read_secret(_secret(settings.bitcoin_rpc_password),
                                 settings.bitcoin_rpc_password_file, "bitcoin_rpc_password"),
            cookie_file=settings.bitcoin_rpc_cookie_file,
        ), settings.bitcoin_poll_interval_s))
    elif settings.mempool_api_url:
        adapters.append((MempoolApi(settings.mempool_api_url), settings.bitcoin_poll_interval_s))
    if settings.btc_usd_url:
        adapters.append((SpotPriceApi(settings.btc_usd_url), settings.bitcoin_poll_interval_s))
    token = read_secret(_secret(settings.entsoe_token), settings.entsoe_token_file, "entsoe_token")
    if token:
        from scheduler.feeds.live.entsoe_prices import EntsoeDayAhead

        adapters.append((
            EntsoeDayAhead(token, zones, settings.entsoe_endpoint_url),
            settings.entsoe_poll_interval_s,
        ))
    if settings.ercot_api_username:
        from scheduler.feeds.live.ercot_prices import ErcotSettlementPoints

        password = read_secret(_secret(settings.ercot_api_password),
                               settings.ercot_api_password_file, "ercot_api_password")
        key = read_secret(_secret(settings.ercot_subscription_key),
                          settings.ercot_subscription_key_file, "ercot_subscription_key")
        if not password or not key:
            raise ValueError("ercot_api_username needs ercot_api_password[_file] and "
                             "ercot_subscription_key[_file]")
        adapters.append((
            ErcotSettlementPoints(
                settings.ercot_api_username, password, key, zones,
                settings.ercot_default_settlement_point, settings.ercot_api_url,
                settings.ercot_token_url,
            ),
            settings.ercot_poll_interval_s,
        ))
    if settings.aemo_nemweb_url:
        from scheduler.feeds.live.aemo_prices import NemPrices

        adapters.append((NemPrices(zones, settings.aemo_nemweb_url),
                         settings.aemo_poll_interval_s))
    if settings.jepx_spot_url:
        from scheduler.feeds.live.day_ahead_files import JepxSpot

        adapters.append((JepxSpot(zones, settings.jepx_spot_url),
                         settings.day_ahead_poll_interval_s))
    if settings.ccee_datastore_url:
        from scheduler.feeds.live.day_ahead_files import CceePld

        if not settings.ccee_pld_resource_id:
            raise ValueError("ccee_datastore_url needs ccee_pld_resource_id (the hourly PLD "
                             "resource of CCEE's open-data portal)")
        adapters.append((CceePld(zones, settings.ccee_datastore_url,
                                 settings.ccee_pld_resource_id),
                         settings.day_ahead_poll_interval_s))
    if settings.ieso_reports_url:
        from scheduler.feeds.live.ieso_prices import IesoZonalPrices

        adapters.append((IesoZonalPrices(zones, settings.ieso_reports_url),
                         settings.ieso_poll_interval_s))
    if settings.nyiso_postings_url:
        from scheduler.feeds.live.nyiso_prices import NyisoZonalPrices

        adapters.append((NyisoZonalPrices(zones, settings.nyiso_default_zone,
                                          settings.nyiso_postings_url),
                         settings.nyiso_poll_interval_s))
    pjm_key = read_secret(_secret(settings.pjm_api_key), settings.pjm_api_key_file,
                          "pjm_api_key")
    if pjm_key:
        from scheduler.feeds.live.pjm_prices import PjmNodalPrices

        adapters.append((PjmNodalPrices(pjm_key, zones, settings.pjm_default_pnode,
                                        settings.pjm_data_miner_url),
                         settings.pjm_poll_interval_s))
    if settings.caiso_enabled:
        from scheduler.feeds.live.caiso_prices import CaisoNodalPrices

        adapters.append((CaisoNodalPrices(zones, settings.caiso_default_node),
                         settings.caiso_poll_interval_s))
    if adapters and settings.market_seconds_per_hour != REAL_CLOCK_S_PER_HOUR:
        names = ", ".join(a.name for a, _ in adapters)
        raise ValueError(
            f"live market sources ({names}) run on the real clock: set market_seconds_per_hour "
            f"to 3600 (it is {settings.market_seconds_per_hour:g}), or configure no live source"
        )
    for adapter, interval_s in adapters:
        log.info("market: live source %s, polled every %g s", adapter.name, interval_s)
    return [PolledSource(adapter, interval_s, clock) for adapter, interval_s in adapters]


def hashprice_index(settings: SchedulerSettings, clock: Clock) -> PolledSource | None:
    """The published hashprice index the settings name, polled beside the live sources; it is
    compared with the computed hashprice (a metric) and never prices anything."""
    if not settings.hashprice_index_url:
        return None
    return PolledSource(
        HashpriceIndexApi(settings.hashprice_index_url, settings.hashprice_index_field,
                          settings.hashprice_index_scale),
        settings.bitcoin_poll_interval_s, clock,
    )


__all__ = [
    "Adapter",
    "Fetched",
    "PolledSource",
    "PublishedPrices",
    "SourceError",
    "SourceHealth",
    "hashprice_index",
    "live_sources",
    "read_secret",
]
