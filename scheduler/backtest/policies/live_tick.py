"""The live scheduler as a backtest policy: its own core, hour by hour, with nothing decided here.

`hashserve_live` runs `SchedulerCore` (job states, placement, deferral, preemption, deadlines)
and the core's `PowerTick` (demand and its value, the plan, may-serve, shedding) exactly as the
live control loop does, on hourly steps of the backtest's clock. What is aggregated for speed:
- a GPU pool is one node, with one job slot per GPU;
- work is cut into jobs of one GPU-hour at the mean rate of the pools serving its model (a
  quarter of that for work due within its hour); a job holds its GPU until it is done (longer on
  a slower pool, less on a faster one), and a GPU freed within the hour takes the next job at the
  next quarter hour;
- placement happens at the hour's start (the live loop places all the time; the backtest's work
  arrives by the hour), and the power tick runs twice: before placement, on what runs then (none:
  last hour's jobs are done), and after it, on what now runs, as the live tick two seconds later.
  The hour is booked on the second plan.
Each hour's `HourPlan` is what that did: the second plan's mining, each pool's GPUs on (those the
plan keeps serving), and the jobs' tokens on the pools they ran on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from scheduler.backtest.policies.base import Assignment, HourPlan, HourView, WorkItem
from scheduler.backtest.policies.hashserve import hour_snapshot
from scheduler.backtest.workload import Workload
from scheduler.backtest.world import KW_PER_MW, S_PER_H, TOKENS_PER_MTOK, World
from scheduler.core.jobs import JobRecord, JobSpecData
from scheduler.core.models import ModelKind
from scheduler.core.placement import DEFAULT_PROFILE, ScoringProfile
from scheduler.core.planner import DEFAULT_PLANNER_CONFIG, PlannerConfig
from scheduler.core.power_step import PRICE_HISTORY_HOURS, PriceHistory
from scheduler.core.power_tick import PowerTick
from scheduler.core.scheduler import (
    Assign,
    NodeInfo,
    SchedulerCore,
    SchedulerPolicy,
    Step,
)

_EPS_MTOK = 1e-9
_EPS_MW = 1e-6
# Steps of an hour at which finished jobs free their GPU and queued work is placed again.
SUBSTEPS = 4
# The live default: below this power price a site keeps its connected GPU nodes serving.
AI_VALUE_FLOOR_USD_PER_MWH = 1000.0


@dataclass(frozen=True)
class _Chunk:
    item_id: int
    mtok: float


class LiveTickPolicy:
    name = "hashserve_live"

    def __init__(
        self,
        profile: ScoringProfile = DEFAULT_PROFILE,
        planner_config: PlannerConfig = DEFAULT_PLANNER_CONFIG,
        ai_value_floor_usd_per_mwh: float = AI_VALUE_FLOOR_USD_PER_MWH,
    ) -> None:
        self.profile = profile
        self.planner_config = planner_config
        self.floor = ai_value_floor_usd_per_mwh

    def reset(self, world: World, workload: Workload) -> None:
        if world.fleet is None:
            raise ValueError("the live policy needs the world's fleet (for the planner)")
        self.world = world
        # Leases and silence do not apply: the modelled agents answer every hour.
        self.core = SchedulerCore(
            SchedulerPolicy(lease_s=2 * S_PER_H, max_placements_per_tick=1 << 30),
            self.profile,
        )
        self.ticker = PowerTick(world.fleet, self.planner_config, self.floor, 0.0)
        self.chunks: dict[str, _Chunk] = {}
        self.seen: set[int] = set()
        self.left: dict[str, float] = {}  # Mtok each submitted job still has to run
        self.done: list[tuple[str, int, str]] = []  # (job, attempt, node) finished last hour
        self.pool_of = {p.pool_id: i for i, p in enumerate(world.pools)}
        self.standby_order = [
            sorted((p for p, pool in enumerate(world.pools) if pool.site_index == s),
                   key=lambda p: world.pools[p].idle_kw_per_gpu / world.pools[p].busy_kw_per_gpu)
            for s in range(world.sites)
        ]
        for pool in world.pools:
            site = world.site_names[pool.site_index]
            info = NodeInfo(
                node_id=pool.pool_id, site=site, region=world.site_regions[pool.site_index],
                gpu_kind=pool.gpu_kind, models=frozenset(pool.tokens_per_s),
                memory_mb=pool.memory_mb, slots_total=pool.gpus,
                idle_power_kw=pool.gpus * pool.idle_kw_per_gpu,
                busy_power_kw=pool.gpus * pool.busy_kw_per_gpu,
            )
            self.core.connect_node(info, (), world.start_s)
            node = self.core.nodes[pool.pool_id]
            for model, rate in pool.tokens_per_s.items():  # what the agents would have learned
                node.estimates.learn(model, int(rate * S_PER_H), S_PER_H, 0.0)
        # The size of job each model's work is cut into: one GPU-hour at the GPU-weighted mean
        # rate of the pools serving it (a job runs longer on a slower pool, shorter on a faster).
        gpu_h: dict[str, float] = {}
        mtok: dict[str, float] = {}
        for pool in world.pools:
            for model in pool.tokens_per_s:
                if pool.mtok_per_gpu_hour(model) > 0:
                    gpu_h[model] = gpu_h.get(model, 0.0) + pool.gpus
                    mtok[model] = mtok.get(model, 0.0) + pool.gpus * pool.mtok_per_gpu_hour(model)
        self.chunk_mtok = {m: mtok[m] / gpu_h[m] for m in mtok if gpu_h[m] > 0}
        self.zone_site: dict[str, int] = {}
        for s, zone in enumerate(world.price_zone):
            self.zone_site.setdefault(zone, s)

    # ------------------------------------------------------------ one hour

    def decide(self, view: HourView) -> HourPlan:
        world = self.world
        now_s = view.now_s
        core = self.core
        # What finished at the end of the last hour: the agents report it.
        self._report(self.done, now_s)
        self.done = []
        for item in view.queue:
            if item.item_id not in self.seen:
                self.seen.add(item.item_id)
                self._submit(item, now_s)
        snapshot = hour_snapshot(world, view)
        history = self._history(view)
        self._apply(self.ticker.run(core, snapshot, {}, now_s, now_s, history).shed, now_s)
        self._apply(core.tick(now_s), now_s)
        # The live tick right after: it plans on what now runs, and sheds what it must.
        after = self.ticker.run(core, snapshot, {}, now_s + 1.0, now_s, history)
        self._apply(after.shed, now_s)
        plan = after.step.plan
        # Where that plan gave the running work's power to mining (a whole ASIC block earns more)
        # the tick shed it and closed the site for the hour. What is placed later in the hour
        # goes only where the plan switched GPUs on: their room is reserved, so it fits the cap.
        reserved = {site for site, p in plan.sites.items() if p.serving_mw > 0} & set(
            core.serving_sites or ()
        )
        refused = bool(after.shed.moves)
        assignments: dict[tuple[int, int], float] = {}
        busy_gpu_h = np.zeros(len(world.pools))
        gpus_on = np.zeros(len(world.pools))  # a GPU that held a job in the hour is on all of it
        peak_mw = dict.fromkeys(world.site_names, 0.0)
        step_h = 1.0 / SUBSTEPS
        finished: list[tuple[str, int, str]] = []
        for k in range(SUBSTEPS):
            t_s = now_s + k * step_h * S_PER_H
            if k > 0:
                self._report(finished, t_s)
                finished = []
            if k > 0 or refused:
                core.serving_sites = reserved
                self._apply(core.schedule(t_s), t_s)
            for site in peak_mw:
                peak_mw[site] = max(peak_mw[site], core.site_busy_mw(site))
            for node_id, node in core.nodes.items():
                p = self.pool_of[node_id]
                pool = world.pools[p]
                gpus_on[p] = max(gpus_on[p], len(node.running))
                for job_id, attempt in node.running:
                    # One GPU runs the job for the sub-step, or for what is left of it.
                    rate = pool.mtok_per_gpu_hour(core.jobs[job_id].spec.model)
                    mtok = min(self.left[job_id], rate * step_h)
                    self.left[job_id] -= mtok
                    key = (self.chunks[job_id].item_id, p)
                    assignments[key] = assignments.get(key, 0.0) + mtok
                    busy_gpu_h[p] += mtok / rate
                    if self.left[job_id] <= _EPS_MTOK:
                        finished.append((job_id, attempt, node_id))
        self.done = finished
        mining = np.zeros(world.sites)
        for s, name in enumerate(world.site_names):
            site_plan = plan.sites[name]
            mining[s] = site_plan.mining_mw
            # The rest of what the plan keeps serving (standby) is on, idle: as many GPUs as
            # fit both its busy-power room and the idle draw it planned, lowest idle draw first
            # (the planner counts a site's idle draw at the site's mean idle fraction).
            busy_room_mw = max(site_plan.serving_mw - peak_mw[name], 0.0)
            idle_room_mw = site_plan.idle_gpu_mw
            for p in self.standby_order[s]:
                pool = world.pools[p]
                busy_mw = pool.busy_kw_per_gpu / KW_PER_MW
                idle_mw = pool.idle_kw_per_gpu / KW_PER_MW
                fit = min(pool.gpus - gpus_on[p], busy_room_mw / busy_mw,
                          idle_room_mw / idle_mw if idle_mw > 0 else math.inf)
                if fit <= 0:
                    continue
                gpus_on[p] += fit
                busy_room_mw -= fit * busy_mw
                idle_room_mw -= fit * idle_mw
        return HourPlan(
            mining, gpus_on,
            tuple(Assignment(i, p, mtok) for (i, p), mtok in sorted(assignments.items())),
        )

    # ------------------------------------------------------------ helpers

    def _report(self, finished: list[tuple[str, int, str]], now_s: float) -> None:
        for job_id, attempt, node_id in finished:
            tokens = int(self.chunks[job_id].mtok * TOKENS_PER_MTOK)
            self._apply(self.core.job_outcome(
                node_id, job_id, attempt, now_s - 1.0, run_ms=S_PER_H * 1000.0, tokens=tokens,
            ).step, now_s)
            self.left.pop(job_id, None)

    def _apply(self, step: Step, now_s: float) -> None:
        """What an agent does with the step: it starts what it is given at once (a cancel
        stops a job this engine never ran: nothing to do)."""
        for intent in step.intents:
            if isinstance(intent, Assign):
                self.core.job_started(intent.node_id, intent.job_id, intent.attempt, now_s)

    def _submit(self, item: WorkItem, now_s: float) -> None:
        work = item.work
        size = self.chunk_mtok.get(work.model)
        if size is None:
            return  # no pool serves the model: it stays queued and misses, as it would live
        if work.deadline_h <= 1:
            # Work due within its hour is cut to a sub-step, so that what starts late in the hour
            # still ends in it (live, a request is tiny; only the aggregation makes it big).
            size /= SUBSTEPS
        deadline_s = self.world.hour_s(item.due_hour + 1) - 1.0
        submitted_s = self.world.hour_s(item.arrived_hour)
        left = item.mtok
        n = 0
        while left > _EPS_MTOK:
            mtok = min(size, left)
            left -= mtok
            job_id = f"w{item.item_id}-{n}"
            n += 1
            tokens = max(int(mtok * TOKENS_PER_MTOK), 1)
            spec = JobSpecData(
                model=work.model, kind=ModelKind.GENERATION, tier=work.tier,
                input_tokens=tokens, output_tokens_est=0, deadline_s=deadline_s,
                allowed_regions=work.allowed_regions, memory_mb=work.memory_mb,
                value_usd=mtok * work.usd_per_mtok,
            )
            self.chunks[job_id] = _Chunk(item.item_id, mtok)
            self.left[job_id] = mtok
            self._apply(
                self.core.submit(JobRecord(job_id, "backtest", spec, b"", submitted_s)), now_s
            )

    def _history(self, view: HourView) -> Mapping[str, PriceHistory]:
        t = view.t
        out = {}
        for zone, s in self.zone_site.items():
            past = self.world.price_usd_per_mwh[s, max(t - PRICE_HISTORY_HOURS + 1, 0) : t + 1]
            out[zone] = PriceHistory(
                [float(v) for v in past], view.now_s + S_PER_H, S_PER_H
            )
        return out


__all__ = ["LiveTickPolicy"]
