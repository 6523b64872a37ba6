"""The admin API and live power planning on real parts: the Ray-hosted scheduler, agent processes
at three sites of the shipped example fleet, real embedding jobs, and the `hashserve` CLI.

One cluster for the module, planning every 0.5 s on the replay of July 2024 (an hour of market
per 5 s). Tests that need a site to mine pin its zone's price with an ops value (R_mine is about
$110/MWh at the July 2024 hashprice of ~$47/PH/day and 17.5 J/TH) and clear it afterwards, so
each test holds whatever the replayed hour happens to be.

Numbers from scheduler/fleet/example_fleet.yaml used below:
- tx-odessa (US-TEX-ERCO): cap 47.25 MW = ASICs 2,700 PH/s x 17.5 J/TH; 2.5 MW blocks.
- de-leipzig (DE-LU): cap 11 MW; ASICs 600 x 17.5 = 10.5 MW in 1.25 MW blocks; GPUs 20 x 10.2 kW
  + 4 x 0.35 kW = 0.2054 MW busy, so 0.5 MW spare room holds all of them.
- br-minas (BR): cap 24.5 MW = ASICs 1,400 x 17.5; 2.5 MW blocks.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hashserve.admin_client import AdminClient
from hashserve.client import Client, embed_spec
from hashserve.local import AgentPlan, LocalCluster, free_port, spawn_agent
from hashserve.v1 import admin_pb2, agent_pb2, agent_pb2_grpc, jobs_pb2
from scheduler.core.fleet import Fleet, SiteSpec
from scheduler.fleet import default_fleet_path, load_fleet
from tests.integration.cluster import EMBED, run, until

pytestmark = pytest.mark.integration
T = TypeVar("T")

AGENTS = [
    AgentPlan("na-1", "tx-odessa", "north_america", backends=("all-minilm-l6-v2=onnx",)),
    AgentPlan("eu-1", "de-leipzig", "europe", backends=("all-minilm-l6-v2=onnx",)),
    AgentPlan("sa-1", "br-minas", "south_america", backends=("all-minilm-l6-v2=onnx",)),
]
NODE_OF_SITE = {a.site: a.agent_id for a in AGENTS}
FLEET: Fleet = load_fleet(default_fleet_path())
EPS = 1e-6
# How long a held job is watched to see it is not placed: a dozen plan and placement ticks.
HOLD_S = 3.0
PLAN_INTERVAL_S = 0.5
PLAN_TICKS_S = 2.5 * PLAN_INTERVAL_S  # long enough for two plan ticks


@dataclass
class Harness:
    cluster: LocalCluster
    metrics_ports: dict[str, int]

    @property
    def admin_key(self) -> str:
        assert self.cluster.credentials is not None
        return self.cluster.credentials.admin_key

    @property
    def api_key(self) -> str:
        assert self.cluster.credentials is not None
        return self.cluster.credentials.api_key

    def admin(self, fn: Callable[[AdminClient], Awaitable[T]], key: str | None = None) -> T:
        admin_key = self.admin_key if key is None else key

        async def go() -> T:
            async with AdminClient(self.cluster.address, admin_key) as c:
                return await fn(c)

        return run(go())

    def customer(self, fn: Callable[[Client], Awaitable[T]], key: str | None = None) -> T:
        async def go() -> T:
            async with Client(self.cluster.address, key or self.api_key) as c:
                return await fn(c)

        return run(go())

    def site(self, name: str) -> admin_pb2.Site:
        return self.admin(lambda c: c.site(name))

    def until_site(
        self, name: str, ok: Callable[[admin_pb2.Site], bool], what: str, timeout_s: float = 15.0
    ) -> admin_pb2.Site:
        until(lambda: ok(self.site(name)), timeout_s, f"{name}: {what}")
        return self.site(name)

    def power_mode_watts(self, agent_id: str) -> dict[str, float]:
        """The power mode the agent last received, from its own metrics endpoint."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics_ports[agent_id]}/metrics").text
        return {
            s.labels["use"]: s.value
            for family in text_string_to_metric_families(text)
            if family.name == "hashserve_agent_power_mode_watts"
            for s in family.samples
        }

    def pin_price(self, zone: str, usd_per_mwh: float) -> None:
        self.admin(lambda c: c.set_price(zone, usd_per_mwh))

    def submit(self, n: int, tier: str = "interactive", regions: tuple[str, ...] = ()) -> list[str]:
        async def go(c: Client) -> list[str]:
            return [
                (await c.submit(embed_spec(EMBED, [f"admin test {i}"], tier, regions))).job.id
                for i in range(n)
            ]

        return self.customer(go)

    def wait(self, job_ids: list[str], timeout_s: float = 90.0) -> list[jobs_pb2.Job]:
        async def go(c: Client) -> list[jobs_pb2.Job]:
            return list(await asyncio.gather(*(c.wait(j, timeout_s) for j in job_ids)))

        return self.customer(go)

    def get(self, job_id: str) -> jobs_pb2.Job:
        return self.customer(lambda c: c.get(job_id))


def spec(site: str) -> SiteSpec:
    return FLEET.site(site)


def nameplate_mw(site: str) -> float:
    s = spec(site)
    return s.asic.power_mw + s.gpu_busy_mw


@pytest.fixture(scope="module")
def h(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    workdir = Path(tmp_path_factory.mktemp("admin-power"))
    cluster = LocalCluster(
        workdir=workdir, agents=AGENTS, settings_overrides={"plan_interval_s": PLAN_INTERVAL_S}
    )
    try:
        cluster.start_scheduler()
        assert cluster.credentials is not None
        ports: dict[str, int] = {}
        for plan in AGENTS:
            ports[plan.agent_id] = free_port()
            cluster.procs[plan.agent_id] = spawn_agent(
                plan, cluster.address, cluster.credentials.agent_token,
                workdir / "logs" / f"{plan.agent_id}.log", metrics_port=ports[plan.agent_id],
            )
        harness = Harness(cluster, ports)

        def all_connected() -> bool:
            try:
                nodes = harness.admin(lambda c: c.nodes()).nodes
                sites = {s.name: s for s in harness.admin(lambda c: c.sites()).sites}
            except grpc.aio.AioRpcError:
                return False
            return sum(n.connected for n in nodes) == len(AGENTS) and all(
                sites[a.site].nodes_connected == 1 for a in AGENTS
            )

        until(all_connected, 180.0, "the agents to connect")
        yield harness
    finally:
        cluster.stop()


# ----- who may call -----------------------------------------------------------------------------

EVERY_CALL: list[tuple[str, Callable[[AdminClient], Awaitable[object]]]] = [
    ("ListSites", lambda c: c.sites()),
    ("ListNodes", lambda c: c.nodes()),
    ("GetMarket", lambda c: c.market()),
    ("SetMarketValue", lambda c: c.set_price("US-TEX-ERCO", 5000.0)),
    ("SetSiteOverride", lambda c: c.set_mode("tx-odessa", "curtail")),
    ("ScheduleCurtailment", lambda c: c.curtail("tx-odessa", time.time(), time.time() + 60)),
    ("DrainNode", lambda c: c.drain("na-1")),
    ("ResumeNode", lambda c: c.resume("na-1")),
    ("CreateTenant", lambda c: c.create_tenant("intruder")),
    ("CreateApiKey", lambda c: c.create_key("demo", admin=True)),
    ("RevokeApiKey", lambda c: c.revoke_key("abc")),
    ("CreateAgentToken", lambda c: c.agent_token("*")),
    ("GetAccounting", lambda c: c.accounting()),
]


def test_every_admin_call_needs_an_admin_key(h: Harness) -> None:
    for name, call in EVERY_CALL:
        for key, code in (
            (h.api_key, grpc.StatusCode.PERMISSION_DENIED),  # a customer's key
            ("", grpc.StatusCode.UNAUTHENTICATED),  # no key at all
            ("hsk_0123456789ab_" + "x" * 32, grpc.StatusCode.UNAUTHENTICATED),  # a made-up key
        ):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                h.admin(call, key=key)
            assert err.value.code() == code, (name, err.value.details())
    # None of the refused calls changed anything (looked at after two plan ticks).
    time.sleep(PLAN_TICKS_S)
    site = h.site("tx-odessa")
    assert site.override == "" and site.mining_mw > 0
    assert site.price_usd_per_mwh != 5000.0
    assert not any(n.draining for n in h.admin(lambda c: c.nodes()).nodes)


# ----- bad input --------------------------------------------------------------------------------

BAD_INPUTS: list[tuple[str, Callable[[AdminClient], Awaitable[object]], grpc.StatusCode, str]] = [
    ("unknown site", lambda c: c.set_mode("tx-nowhere", "curtail"), grpc.StatusCode.NOT_FOUND,
     "no site"),
    ("bad mode", lambda c: c.set_mode("tx-odessa", "turbo"), grpc.StatusCode.INVALID_ARGUMENT,
     "mode 'turbo'"),
    ("negative cap", lambda c: c.set_mode("tx-odessa", "auto", -1.0),
     grpc.StatusCode.INVALID_ARGUMENT, "cap_mw"),
    ("NaN cap", lambda c: c.set_mode("tx-odessa", "mine", math.nan),
     grpc.StatusCode.INVALID_ARGUMENT, "cap_mw"),
    ("unknown zone", lambda c: c.set_price("MARS", 10.0), grpc.StatusCode.NOT_FOUND,
     "no price zone"),
    ("NaN price", lambda c: c.set_price("DE-LU", math.nan), grpc.StatusCode.INVALID_ARGUMENT,
     "outside"),
    ("absurd price", lambda c: c.set_price("DE-LU", 1e9), grpc.StatusCode.INVALID_ARGUMENT,
     "outside"),
    ("absurd negative price", lambda c: c.set_price("DE-LU", -5000.0),
     grpc.StatusCode.INVALID_ARGUMENT, "outside"),
    ("infinite price", lambda c: c.set_price("DE-LU", math.inf),
     grpc.StatusCode.INVALID_ARGUMENT, "outside"),
    ("negative hashprice", lambda c: c.set_btc(hashprice_usd_per_phs_day=-1.0),
     grpc.StatusCode.INVALID_ARGUMENT, "hashprice_usd_per_phs_day"),
    # A good BTC price with a bad hashprice: refused whole, the BTC price is not set either.
    ("good btc, bad hashprice", lambda c: c.set_btc(12_345.0, math.nan),
     grpc.StatusCode.INVALID_ARGUMENT, "hashprice_usd_per_phs_day"),
    ("nothing to set", lambda c: c._set_market(admin_pb2.SetMarketValueRequest()),
     grpc.StatusCode.INVALID_ARGUMENT, "or clear"),
    # A clear with a bad zone: refused whole, the ops values stay.
    ("clear with a bad zone",
     lambda c: c._set_market(admin_pb2.SetMarketValueRequest(clear=True, zone="MARS")),
     grpc.StatusCode.NOT_FOUND, "no price zone"),
    ("window ends before it starts",
     lambda c: c.curtail("br-minas", time.time() + 60, time.time() + 30),
     grpc.StatusCode.INVALID_ARGUMENT, "end after start"),
    ("window in the past", lambda c: c.curtail("br-minas", time.time() - 60, time.time() - 30),
     grpc.StatusCode.INVALID_ARGUMENT, "in the past"),
    ("window at an unknown site",
     lambda c: c.curtail("nowhere", time.time(), time.time() + 30), grpc.StatusCode.NOT_FOUND,
     "no site"),
    ("drain an unknown node", lambda c: c.drain("no-such-node"), grpc.StatusCode.NOT_FOUND,
     "no node"),
    ("bad tenant name", lambda c: c.create_tenant("Bad Name!"),
     grpc.StatusCode.INVALID_ARGUMENT, "tenant name"),
    ("absurd tenant rate", lambda c: c.create_tenant("fine-name", 10, 1e12),
     grpc.StatusCode.INVALID_ARGUMENT, "submits_per_second"),
    ("key for an unknown tenant", lambda c: c.create_key("no-such-tenant"),
     grpc.StatusCode.NOT_FOUND, "create it first"),
    ("revoke an unknown key", lambda c: c.revoke_key("000000000000"), grpc.StatusCode.NOT_FOUND,
     "no live key"),
    ("bad agent id", lambda c: c.agent_token("../etc"), grpc.StatusCode.INVALID_ARGUMENT,
     "agent_id"),
]


def _state(h: Harness) -> tuple[object, ...]:
    """What a refused call must not change: overrides, ops market values, drains."""
    sites = h.admin(lambda c: c.sites()).sites
    market = h.admin(lambda c: c.market())
    nodes = h.admin(lambda c: c.nodes()).nodes
    return (
        sorted((s.name, s.override, s.override_cap_mw) for s in sites),
        sorted((z.zone, z.source, z.price_usd_per_mwh) for z in market.zones if z.source == "ops"),
        sorted((n.id, n.draining) for n in nodes),
    )


def test_bad_input_gets_a_clear_status_and_changes_nothing(h: Harness) -> None:
    # An ops value that a wrongly accepted clear would drop (JP-TK: no agent there).
    h.pin_price("JP-TK", 80.0)
    try:
        before = _state(h)
        for name, call, code, words in BAD_INPUTS:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                h.admin(call)
            assert err.value.code() == code, (name, err.value.details())
            assert words in (err.value.details() or ""), (name, err.value.details())
        # The market the API shows is the last plan's: let two plan ticks pass before looking.
        time.sleep(PLAN_TICKS_S)
        assert _state(h) == before
        assert h.admin(lambda c: c.market()).btc_usd != 12_345.0
    finally:
        h.admin(lambda c: c.clear_market())


# ----- live power planning ----------------------------------------------------------------------


def test_price_spike_curtails_mining_and_ai_and_work_goes_elsewhere(h: Harness) -> None:
    market = h.admin(lambda c: c.market())
    assert any(z.zone == "US-TEX-ERCO" and z.source != "ops" for z in market.zones)
    try:
        market = h.admin(lambda c: c.set_price("US-TEX-ERCO", 5000.0))
        zone = next(z for z in market.zones if z.zone == "US-TEX-ERCO")
        assert (zone.source, zone.price_usd_per_mwh, zone.stale) == ("ops", 5000.0, False)
        # The call planned at once: no need to wait for the next tick.
        site = h.site("tx-odessa")
        assert site.price_usd_per_mwh == 5000.0
        assert site.mining_mw == 0.0
        # Above the $1,000/MWh AI value floor, AI curtails too: no busy, standby or idle GPUs.
        assert site.ai_mw == 0.0 and site.idle_mw == 0.0
        assert site.curtailed_mw == pytest.approx(nameplate_mw("tx-odessa"))
        assert "mining curtailed: price above R_mine" in site.mode_reason
        assert site.profit_usd_per_hour == 0.0
        for other in h.admin(lambda c: c.sites()).sites:
            if other.price_zone == "US-TEX-ERCO":
                assert other.mining_mw == 0.0, other.name
        # The agent there got the power mode.
        until(
            lambda: h.power_mode_watts("na-1").get("mining") == 0.0, 10.0,
            "na-1 to receive mining 0",
        )

        held = h.submit(1, "standard", ("north_america",))  # only tx-odessa could run it
        jobs = h.wait(h.submit(6))
        assert all(j.state == jobs_pb2.JOB_STATE_SUCCEEDED for j in jobs), [j.error for j in jobs]
        assert {j.site for j in jobs} <= {"de-leipzig", "br-minas"}
        time.sleep(HOLD_S)
        assert h.get(held[0]).state == jobs_pb2.JOB_STATE_QUEUED
    finally:
        market = h.admin(lambda c: c.clear_market())

    # The replayed ERCOT price (under $72/MWh in early July 2024) is back, far below AI's value:
    # the held job runs at once; mining comes back once the dwell since the cut is over.
    zone = next(z for z in market.zones if z.zone == "US-TEX-ERCO")
    assert zone.source != "ops" and zone.price_usd_per_mwh < 100.0
    (job,) = h.wait(held)
    assert job.state == jobs_pb2.JOB_STATE_SUCCEEDED and job.site == "tx-odessa"
    site = h.until_site("tx-odessa", lambda s: s.mining_mw > 0, "mining again after the dwell")
    assert site.price_usd_per_mwh < site.r_mine_usd_per_mwh
    # Mining resumes in whole blocks; everything the cap allows beyond that is the GPUs' room.
    assert spec("tx-odessa").asic.power_mw - site.mining_mw < spec(
        "tx-odessa"
    ).asic.curtail_block_mw


def test_negative_price_consumes_everything_the_site_can(h: Harness) -> None:
    leipzig = spec("de-leipzig")
    try:
        h.pin_price("DE-LU", 40.0)
        before = h.until_site(
            "de-leipzig", lambda s: abs(s.mining_mw - leipzig.asic.power_mw) < EPS,
            "mining at $40/MWh",
        )
        # A positive price: the GPU capacity no agent wants stays off.
        assert before.curtailed_mw > 0.1

        h.pin_price("DE-LU", -50.0)
        site = h.until_site(
            "de-leipzig", lambda s: s.curtailed_mw < EPS, "nothing curtailed at -$50/MWh"
        )
        # All ASICs mine (10.5 MW) and every GPU is switched on: 0.2054 MW of busy capacity
        # drawing its idle power (~29%), all under the 11 MW cap.
        assert site.mining_mw == pytest.approx(leipzig.asic.power_mw)
        assert site.idle_mw > before.idle_mw
        assert site.mining_mw + site.ai_mw + site.idle_mw <= site.power_cap_mw + EPS
        assert "negative price: idle GPU nodes switched on" in site.mode_reason
        # Paid to consume: power "costs" a negative amount, so the hour's profit beats mining's.
        assert site.profit_usd_per_hour > site.mining_mw * site.r_mine_usd_per_mwh
        # Every site of the zone: no ASIC curtailed beyond what a whole block cannot fill.
        for other in h.admin(lambda c: c.sites()).sites:
            if other.price_zone == "DE-LU":
                asic = spec(other.name).asic
                assert asic.power_mw - other.mining_mw < asic.curtail_block_mw, other.name
    finally:
        h.admin(lambda c: c.clear_market())


def test_forced_curtail_stops_mining_and_new_work_and_auto_restores(h: Harness) -> None:
    try:
        h.pin_price("DE-LU", 40.0)
        h.until_site("de-leipzig", lambda s: s.mining_mw > 0, "mining at $40/MWh")

        site = h.admin(lambda c: c.set_mode("de-leipzig", "curtail"))
        assert site.override == "curtail"
        assert (site.mining_mw, site.ai_mw, site.idle_mw) == (0.0, 0.0, 0.0)
        assert site.curtailed_mw == pytest.approx(nameplate_mw("de-leipzig"))
        assert "ops: force curtail" in site.mode_reason
        until(
            lambda: h.power_mode_watts("eu-1").get("mining") == 0.0
            and h.power_mode_watts("eu-1").get("curtailed", 0.0) > 10e6,
            10.0, "eu-1 to receive the curtail",
        )

        held = h.submit(1, "standard", ("europe",))  # only de-leipzig could run it
        jobs = h.wait(h.submit(4))
        assert all(j.state == jobs_pb2.JOB_STATE_SUCCEEDED for j in jobs)
        assert "de-leipzig" not in {j.site for j in jobs}
        time.sleep(HOLD_S)
        assert h.get(held[0]).state == jobs_pb2.JOB_STATE_QUEUED

        site = h.admin(lambda c: c.set_mode("de-leipzig", "auto"))
        assert site.override == ""
        (job,) = h.wait(held)
        assert job.state == jobs_pb2.JOB_STATE_SUCCEEDED and job.site == "de-leipzig"
        h.until_site("de-leipzig", lambda s: s.mining_mw > 0, "mining again")
        until(lambda: (h.power_mode_watts("eu-1").get("mining") or 0.0) > 0, 10.0, "eu-1 mining")

        # An ops cap: the site's load stays under it, at once (a lower cap skips the dwell).
        site = h.admin(lambda c: c.set_mode("de-leipzig", "auto", 5.0))
        assert site.override_cap_mw == 5.0
        assert 0 < site.mining_mw <= 5.0
        assert site.mining_mw + site.ai_mw + site.idle_mw <= 5.0 + EPS
        assert "ops cap 5 MW" in site.mode_reason
        site = h.admin(lambda c: c.set_mode("de-leipzig", "auto"))
        assert site.override_cap_mw == 0.0
    finally:
        h.admin(lambda c: c.set_mode("de-leipzig", "auto"))
        h.admin(lambda c: c.clear_market())


def test_a_drained_node_gets_no_new_work_until_resumed(h: Harness) -> None:
    try:
        h.pin_price("US-TEX-ERCO", 30.0)
        node = h.admin(lambda c: c.drain("na-1"))
        assert node.id == "na-1" and node.draining and node.connected
        listed = {n.id: n for n in h.admin(lambda c: c.nodes()).nodes}
        assert listed["na-1"].draining and not listed["eu-1"].draining
        assert [n.id for n in h.admin(lambda c: c.nodes("tx-odessa")).nodes] == ["na-1"]

        held = h.submit(1, "standard", ("north_america",))  # na-1 is the only node there
        jobs = h.wait(h.submit(4))
        assert all(j.state == jobs_pb2.JOB_STATE_SUCCEEDED for j in jobs)
        assert "na-1" not in {j.node for j in jobs}
        time.sleep(HOLD_S)
        assert h.get(held[0]).state == jobs_pb2.JOB_STATE_QUEUED

        node = h.admin(lambda c: c.resume("na-1"))
        assert not node.draining
        (job,) = h.wait(held)
        assert job.state == jobs_pb2.JOB_STATE_SUCCEEDED and job.node == "na-1"
    finally:
        h.admin(lambda c: c.resume("na-1"))
        h.admin(lambda c: c.clear_market())


# ----- tenants and keys -------------------------------------------------------------------------


def test_a_new_tenants_key_sees_only_its_jobs_until_revoked(h: Harness) -> None:
    tenant = h.admin(lambda c: c.create_tenant("acme-ops", 50, 5.0))
    assert (tenant.name, tenant.max_queued_jobs, tenant.submits_per_second) == (
        "acme-ops", 50, 5.0,
    )
    issued = h.admin(lambda c: c.create_key("acme-ops"))
    assert issued.api_key.startswith(f"hsk_{issued.key_id}_")
    theirs = h.customer(
        lambda c: c.submit(embed_spec(EMBED, ["tenant text"], "interactive")), key=issued.api_key
    ).job.id
    ours = h.submit(1)[0]
    done = h.customer(lambda c: c.wait(theirs, 60), key=issued.api_key)
    assert done.state == jobs_pb2.JOB_STATE_SUCCEEDED
    listed = h.customer(lambda c: c.list_jobs(1000), key=issued.api_key)
    assert [j.id for j in listed.jobs] == [theirs]
    assert theirs not in {j.id for j in h.customer(lambda c: c.list_jobs(1000)).jobs}
    assert ours in {j.id for j in h.customer(lambda c: c.list_jobs(1000)).jobs}
    # A customer key of the new tenant is not an admin key.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        h.admin(lambda c: c.sites(), key=issued.api_key)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED

    h.admin(lambda c: c.revoke_key(issued.key_id))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        h.customer(lambda c: c.list_jobs(10), key=issued.api_key)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        h.admin(lambda c: c.revoke_key(issued.key_id))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND

    # An admin key made through the API works for the admin API until it is revoked.
    admin_issued = h.admin(lambda c: c.create_key("acme-ops", admin=True))
    assert len(h.admin(lambda c: c.sites(), key=admin_issued.api_key).sites) == len(FLEET.sites)
    h.admin(lambda c: c.revoke_key(admin_issued.key_id))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        h.admin(lambda c: c.sites(), key=admin_issued.api_key)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


# ----- accounting -------------------------------------------------------------------------------


def test_accounting_rows_add_up(h: Harness) -> None:
    rows = list(h.admin(lambda c: c.accounting()).rows)
    assert rows
    assert {r.site for r in rows} == {s.name for s in FLEET.sites}
    for r in rows:
        assert r.hour.seconds % 3600 == 0 and r.hour.nanos == 0
        assert r.profit_usd == pytest.approx(
            r.mining_revenue_usd + r.ai_revenue_usd - r.power_cost_usd, rel=1e-9, abs=1e-9
        ), r
        assert min(r.mining_mwh, r.ai_mwh, r.idle_mwh, r.curtailed_mwh) >= 0.0
        if r.mining_mwh > 0:
            # Mining earns R_mine per MWh: ~$100-120 in July 2024 at 15-29.5 J/TH (or the $30
            # /PH/day floor's R_mine); a generous band that still catches a unit slip.
            assert 30.0 < r.mining_revenue_usd / r.mining_mwh < 400.0, r
    ours = [r for r in rows if r.site in NODE_OF_SITE]
    assert sum(r.ai_revenue_usd for r in ours) > 0  # the jobs that ran earned something
    assert sum(r.ai_revenue_usd for r in rows if r.site not in NODE_OF_SITE) == 0

    only = h.admin(lambda c: c.accounting("br-minas")).rows
    assert only and {r.site for r in only} == {"br-minas"}
    last_hour_s = max(r.hour.seconds for r in rows)
    recent = h.admin(lambda c: c.accounting(start_s=last_hour_s, end_s=last_hour_s + 3600)).rows
    assert recent and all(r.hour.seconds == last_hour_s for r in recent)


# ----- the CLI ----------------------------------------------------------------------------------


def _cli(h: Harness, tmp: Path, *args: str, key: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HASHSERVE_")}
    env["COLUMNS"] = "250"  # rich tables: one line per row, so the test can find the cells
    return subprocess.run(
        [sys.executable, "-m", "hashserve", *args,
         "--scheduler", h.cluster.address, "--admin-key", key or h.admin_key],
        cwd=tmp, env=env, capture_output=True, text=True, timeout=60,
    )


def _last_json(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_cli_prints_sites_market_nodes_and_accounting(h: Harness, tmp_path: Path) -> None:
    sites = _last_json(_cli(h, tmp_path, "sites", "--json"))
    assert {s["name"] for s in sites["sites"]} == {s.name for s in FLEET.sites}
    by_name = {s["name"]: s for s in sites["sites"]}
    for a in AGENTS:
        assert by_name[a.site]["nodes_connected"] == 1
        assert by_name[a.site]["region"] == a.region
    assert sites["totals"]["nodes_connected"] == len(AGENTS)
    assert sites["totals"]["mining_mw"] == pytest.approx(
        sum(s["mining_mw"] for s in sites["sites"])
    )
    europe = _last_json(_cli(h, tmp_path, "sites", "--region", "europe", "--json"))
    assert europe["sites"] and {s["region"] for s in europe["sites"]} == {"europe"}

    market = _last_json(_cli(h, tmp_path, "market", "--json"))
    assert {z["zone"] for z in market["zones"]} == set(FLEET.price_zones)
    assert all(z["source"] and z["age_s"] is not None for z in market["zones"])
    assert market["btc_usd"] > 0 and market["hashprice_usd_per_phs_day"] > 0

    nodes = _last_json(_cli(h, tmp_path, "admin", "nodes", "--json"))
    assert {n["id"] for n in nodes["nodes"]} == set(NODE_OF_SITE.values())

    accounting = _last_json(_cli(h, tmp_path, "admin", "accounting", "--hours", "2", "--json"))
    assert accounting["rows"]
    # The last two market hours; a third when a new one began between the CLI's two calls.
    assert len({r["hour"] for r in accounting["rows"]}) <= 3
    assert accounting["totals"]["profit_usd"] == pytest.approx(
        accounting["totals"]["mining_revenue_usd"] + accounting["totals"]["ai_revenue_usd"]
        - accounting["totals"]["power_cost_usd"]
    )

    table = _cli(h, tmp_path, "sites")
    assert table.returncode == 0, table.stderr
    assert "tx-odessa" in table.stdout and "total (44)" in table.stdout


def test_cli_sets_prices_revokes_keys_and_reports_grpc_errors(h: Harness, tmp_path: Path) -> None:
    try:
        market = _last_json(_cli(h, tmp_path, "admin", "set-price", "FR", "-50", "--json"))
        fr = next(z for z in market["zones"] if z["zone"] == "FR")
        assert (fr["price_usd_per_mwh"], fr["source"]) == (-50.0, "ops")
    finally:
        cleared = _last_json(_cli(h, tmp_path, "admin", "clear-market", "--json"))
    assert all(z["source"] != "ops" for z in cleared["zones"])

    denied = _cli(h, tmp_path, "sites", key=h.api_key)
    assert denied.returncode == 1
    assert "PERMISSION_DENIED" in denied.stderr and "admin key" in denied.stderr
    missing = _cli(h, tmp_path, "admin", "set-mode", "nowhere", "curtail")
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr
    absurd = _cli(h, tmp_path, "admin", "set-price", "FR", "99999")
    assert absurd.returncode == 1 and "INVALID_ARGUMENT" in absurd.stderr

    # A key made with the CLI, printed once on stdout; revoked by pasting the whole key.
    made = _cli(h, tmp_path, "admin", "create-key", "demo")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    h.customer(lambda c: c.list_jobs(5), key=key)  # accepted before the revoke
    revoked = _cli(h, tmp_path, "admin", "revoke-key", key)
    assert revoked.returncode == 0, revoked.stderr
    with pytest.raises(grpc.aio.AioRpcError) as err:
        h.customer(lambda c: c.list_jobs(5), key=key)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


# ----- demand response (last: its window outlives the test) -------------------------------------


def test_curtailment_window_curtails_the_site_while_it_lasts(h: Harness) -> None:
    h.pin_price("BR", 20.0)
    try:
        h.until_site("br-minas", lambda s: s.mining_mw > 0, "mining at $20/MWh")
        now = time.time()
        site = h.admin(lambda c: c.curtail("br-minas", now, now + 60, "grid emergency drill"))
        assert (site.mining_mw, site.ai_mw, site.idle_mw) == (0.0, 0.0, 0.0)
        assert "grid emergency drill" in site.mode_reason
        until(
            lambda: h.power_mode_watts("sa-1").get("mining") == 0.0, 10.0,
            "sa-1 to receive the curtailment",
        )
        held = h.submit(1, "standard", ("south_america",))  # only br-minas could run it
        time.sleep(HOLD_S)
        assert h.get(held[0]).state == jobs_pb2.JOB_STATE_QUEUED
        assert h.site("br-minas").mining_mw == 0.0  # still inside the window

        # A window later on (br-piaui, ASICs only): not yet, then curtailed, then over.
        start = time.time() + 3.0
        site = h.admin(lambda c: c.curtail("br-piaui", start, start + 4.0, "scheduled"))
        assert site.mining_mw > 0
        h.until_site("br-piaui", lambda s: s.mining_mw == 0.0, "the window to start", 10.0)
        assert time.time() >= start
        h.until_site("br-piaui", lambda s: s.mining_mw > 0, "the window to end", 15.0)
        assert time.time() >= start + 4.0
    finally:
        h.admin(lambda c: c.clear_market())


def test_an_agent_token_lets_only_its_agent_in(h: Harness) -> None:
    token = h.admin(lambda c: c.agent_token("probe-1", site="jp-chiba")).token
    assert token.startswith("hsa_")

    async def hello(agent_id: str, site: str = "jp-chiba",
                    region: str = "asia_pacific") -> agent_pb2.SchedulerMessage:
        async with grpc.aio.insecure_channel(h.cluster.address) as channel:
            stub = agent_pb2_grpc.AgentServiceStub(channel)

            async def messages() -> AsyncIterator[agent_pb2.AgentMessage]:
                yield agent_pb2.AgentMessage(
                    hello=agent_pb2.AgentHello(
                        agent_id=agent_id, site=site, region=region,
                        # A model no test here asks for, so nothing is placed on the probe.
                        models=["smollm2-135m-instruct"], max_concurrent_jobs=1,
                    )
                )
                await asyncio.sleep(2.0)

            call = stub.Connect(messages(), metadata=(("authorization", f"Bearer {token}"),))
            async for reply in call:
                call.cancel()
                return reply
            raise AssertionError("no reply")

    with pytest.raises(grpc.aio.AioRpcError) as err:
        run(hello("probe-2"))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert run(hello("probe-1")).welcome.agent_id == "probe-1"
    # Bound to its site as well: the same id at another site is refused.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        run(hello("probe-1", site="tx-odessa", region="north_america"))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_windows_overrides_and_drains_survive_a_scheduler_restart(h: Harness) -> None:
    """Ops state lives in the journal: after Ray restarts a SIGKILLed scheduler, a scheduled
    window (with its MW target and id), a forced mode with its cap, a drain and an ops price
    still hold, and the window can then be listed and cancelled through the API."""
    from hashserve.admin_views import seconds
    from tests.chaos.harness import wait_serving

    now_s = time.time()
    site = h.admin(lambda c: c.curtail("br-minas", now_s + 3600, now_s + 7200, "4CP", 2.5))
    (window,) = [w for w in site.curtailments if w.reason == "4CP"]  # earlier tests left theirs
    assert (window.site, window.max_load_mw, window.reason, window.active) == (
        "br-minas", 2.5, "4CP", False
    )
    h.admin(lambda c: c.set_mode("de-leipzig", "mine", 12.0))
    h.admin(lambda c: c.drain("na-1"))
    h.pin_price("BR", 33.0)
    ledger = {
        (r.site, seconds(r.hour)): r.mining_mwh for r in h.admin(lambda c: c.accounting()).rows
    }
    assert ledger
    try:
        supervisor = h.cluster.supervisor
        assert supervisor is not None
        pid = int(supervisor.info["pid"])  # type: ignore[attr-defined]
        os.kill(pid, signal.SIGKILL)
        until(lambda: int(supervisor.info["pid"]) != pid, 90, "Ray to restart the scheduler")  # type: ignore[attr-defined]
        run(wait_serving(h.cluster.address))
        listed = h.admin(lambda c: c.curtailments("br-minas")).windows
        assert [(w.site, w.max_load_mw, w.reason) for w in listed if w.id == window.id] == [
            ("br-minas", 2.5, "4CP")
        ]
        leipzig = h.site("de-leipzig")
        assert (leipzig.override, leipzig.override_cap_mw) == ("mine", 12.0)
        # The ledger's hours from before the restart are still served, from the journal.
        ledger_after = {(r.site, seconds(r.hour)): r.mining_mwh
                        for r in h.admin(lambda c: c.accounting()).rows}
        kept = [k for k in ledger if k in ledger_after]
        assert len(kept) == len(ledger)
        # An hour may have gone on filling since.
        assert all(ledger_after[k] >= ledger[k] - 1e-9 for k in kept)
        (br,) = [z for z in h.admin(lambda c: c.market()).zones if z.zone == "BR"]
        assert (br.price_usd_per_mwh, br.source) == (pytest.approx(33.0), "ops")
        until(
            lambda: any(n.id == "na-1" and n.connected and n.draining
                        for n in h.admin(lambda c: c.nodes()).nodes),
            60, "na-1 to reconnect, still drained",
        )
        after = h.admin(lambda c: c.cancel_curtailment(window.id))
        assert window.id not in {w.id for w in after.curtailments}
        with pytest.raises(grpc.aio.AioRpcError) as err:
            h.admin(lambda c: c.cancel_curtailment(window.id))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        h.admin(lambda c: c.set_mode("de-leipzig", "auto"))
        h.admin(lambda c: c.resume("na-1"))
        h.admin(lambda c: c.clear_market())
