"""Capacity by SLO: how many nodes keep each model loaded, and which ones.

Placement answers "where does this job go"; this answers "which engines should exist for the jobs
to go to". Each control tick the core hands it what it knows (per model: the arrival rate, the
queue, the measured service time, the latency targets; per node: what it holds, can load and is
running) and it returns the loads and unloads that bring the fleet to what the targets need.

The replica count comes from queueing, not from a utilisation threshold. A model's replicas,
with `slots` jobs each, are an M/M/c queue (c = replicas x slots): the expected wait for a slot
(Erlang C) must fit in the part of the time-to-first-token target that is not the job's own
first-token work, and what is queued now must drain within that target. A per-token target that a
node misses at full concurrency counts that node's slots as fewer (fewer jobs at once, each
faster), so a slow engine asks for more replicas rather than for more jobs at once.

Scaling down is slower than scaling up on purpose (a cold start costs seconds, a loaded idle model
only memory): a replica beyond what the targets need is unloaded only once the surplus has lasted
`scale_down_after_s`, and the last one only where the policy allows scale to zero and the model
has had no demand for `scale_to_zero_after_s`. Pure: no I/O, the caller passes `now_s`.

Regions steer where the replicas go, not how many there are. A job that allows only some regions
can use a replica in those alone, so the count stays fleet-wide (queueing over the whole fleet)
while each region's share of the demand that only it may serve ("restricted" demand; a job allowing
regions R counts 1/|R| in each) decides which nodes load first and which unload last, and a queue
that no held replica may serve gets one in its regions however many are held elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

EWMA_WEIGHT = 0.2  # service times: about the last ten jobs
# Slot counts above this are as good as infinite for the wait of one job.
MAX_SERVERS = 100_000


@dataclass(frozen=True)
class CapacityPolicy:
    enabled: bool = True
    # Of the time-to-first-token target, the share the wait for a slot may take (the rest is the
    # job's own prompt evaluation and the network).
    queue_share: float = 0.5
    # Arrival rate: an exponentially weighted rate with this time constant.
    rate_window_s: float = 30.0
    # A surplus replica is unloaded after this long (None: loaded models stay loaded).
    scale_down_after_s: float | None = None
    # With no demand for this long, the last replica goes too (None: never to zero).
    scale_to_zero_after_s: float | None = None
    # Loads sent per tick, fleet-wide: a burst must not start every engine at once.
    max_loads_per_tick: int = 16
    # A load the agent refused (memory) is not asked of that node again for this long.
    refused_retry_s: float = 60.0


@dataclass(frozen=True)
class ModelTargets:
    """A model's serving targets, from the catalogue."""

    ttft_target_s: float  # submit -> first token (an embedding: -> its answer)
    per_token_target_s: float = 0.0  # between output tokens; 0: none
    memory_mb: int = 0  # what one loaded copy takes of a node's accelerator memory


@dataclass
class ModelDemand:
    """What the core has seen of one model's jobs. Updated by the core on submits and outcomes."""

    rate_per_s: float = 0.0
    rate_at_s: float = 0.0
    service_s: float = 0.0  # mean run time of one job on one slot (0: none measured yet)
    per_token_s: float = 0.0  # mean time per output token, measured (0: not known)
    last_demand_s: float | None = None  # the last arrival, or the last time jobs were queued

    # Of `rate_per_s`, the arrivals that only some regions may serve, per region (a job allowing
    # regions R adds 1/|R| of itself to each); the rest may run anywhere. As of `rate_at_s`, like
    # `rate_per_s`: both decay alike, so a region's share of the demand needs no clock.
    region_rate_per_s: dict[str, float] = field(default_factory=dict)
    # Per set of allowed regions, the last arrival, queued or running job that only those
    # regions may serve: scale-down keeps the set's last replica while this is recent.
    regions_last_demand_s: dict[frozenset[str], float] = field(default_factory=dict)

    def arrive(self, now_s: float, window_s: float, count: int = 1,
               regions: frozenset[str] = frozenset()) -> None:
        """`count` jobs arrived that may run in `regions` (empty: in any)."""
        decay = self._decay(now_s, window_s)
        self.rate_per_s = self.rate_per_s * decay + count / window_s
        for region in self.region_rate_per_s:
            self.region_rate_per_s[region] *= decay
        for region in regions:
            self.region_rate_per_s[region] = (
                self.region_rate_per_s.get(region, 0.0) + count / len(regions) / window_s)
        if regions:
            self.regions_last_demand_s[regions] = now_s
        self.rate_at_s = now_s
        self.last_demand_s = now_s

    def rate_at(self, now_s: float, window_s: float) -> float:
        """The arrival rate as of `now_s`: the rate decays while nothing arrives."""
        return self.rate_per_s * self._decay(now_s, window_s)

    def region_rates_at(self, now_s: float, window_s: float) -> dict[str, float]:
        """Per region, the rate of arrivals only regions including it may serve, as of `now_s`."""
        decay = self._decay(now_s, window_s)
        return {region: rate * decay for region, rate in self.region_rate_per_s.items()}

    def _decay(self, now_s: float, window_s: float) -> float:
        return math.exp(-max(now_s - self.rate_at_s, 0.0) / window_s)

    def served(self, run_s: float, output_tokens: int) -> None:
        if run_s <= 0:
            return
        self.service_s = run_s if self.service_s == 0 else (
            self.service_s + EWMA_WEIGHT * (run_s - self.service_s))
        if output_tokens > 0:
            per_token_s = run_s / output_tokens
            self.per_token_s = per_token_s if self.per_token_s == 0 else (
                self.per_token_s + EWMA_WEIGHT * (per_token_s - self.per_token_s))


@dataclass(frozen=True)
class NodeModels:
    """One node as capacity planning reads it."""

    node_id: str
    site: str
    eligible: bool  # connected, healthy, not draining, its site may serve AI
    slots: int
    memory_mb: int
    loaded: frozenset[str]
    loading: frozenset[str]
    loadable: frozenset[str]  # can load, not loaded or loading now
    running: Mapping[str, int] = field(default_factory=dict)  # model -> jobs running
    refused: frozenset[str] = frozenset()  # models whose load it refused lately
    region: str = ""  # where a job's allowed regions are checked against
    # Models ops loaded here by hand: capacity never unloads them (ops do, or a restart).
    pinned: frozenset[str] = frozenset()

    @property
    def held(self) -> frozenset[str]:
        return self.loaded | self.loading


@dataclass(frozen=True)
class LoadOnNode:
    node_id: str
    site: str
    model: str
    reason: str


@dataclass(frozen=True)
class UnloadOnNode:
    node_id: str
    site: str
    model: str
    reason: str


@dataclass(frozen=True)
class ModelCapacity:
    """One model's plan: what the targets need, against what is held."""

    model: str
    wanted: int
    held: int
    arrivals_per_s: float
    queued: int
    why: str


@dataclass(frozen=True)
class CapacityPlan:
    models: tuple[ModelCapacity, ...] = ()
    actions: tuple[LoadOnNode | UnloadOnNode, ...] = ()
    # (site, model) -> replicas held there after the actions
    replicas: Mapping[tuple[str, str], int] = field(default_factory=dict)


def erlang_c_wait_s(servers: int, arrivals_per_s: float, service_s: float) -> float:
    """Expected wait for a free server in an M/M/c queue; infinite when it cannot keep up."""
    load = arrivals_per_s * service_s  # offered load, in servers
    if load <= 0:
        return 0.0
    if servers <= load:
        return math.inf
    # Erlang B by its stable recursion, then C from B.
    b = 1.0
    for k in range(1, servers + 1):
        b = load * b / (k + load * b)
    c = servers * b / (servers - load * (1.0 - b))
    return c * service_s / (servers - load)


def servers_for_wait(arrivals_per_s: float, service_s: float, wait_budget_s: float) -> int:
    """The fewest servers whose expected wait fits the budget."""
    load = arrivals_per_s * service_s
    if load <= 0:
        return 0
    servers = max(math.floor(load) + 1, 1)
    while servers < MAX_SERVERS and erlang_c_wait_s(servers, arrivals_per_s, service_s) > (
        wait_budget_s
    ):
        servers += 1
    return servers


def usable_slots(slots: int, per_token_s: float, per_token_target_s: float) -> int:
    """A node's slots at the per-token target: a node that misses it at full concurrency runs
    fewer jobs at once (decoding shares the engine, so fewer jobs decode faster each)."""
    if per_token_target_s <= 0 or per_token_s <= per_token_target_s:
        return max(slots, 1)
    return max(int(slots * per_token_target_s / per_token_s), 1)


def replicas_needed(
    demand: ModelDemand, targets: ModelTargets, queued: int, slots_per_node: int,
    now_s: float, policy: CapacityPolicy,
) -> tuple[int, str]:
    """How many nodes should hold the model, and why, in words an operator reads."""
    rate = demand.rate_at(now_s, policy.rate_window_s)
    service_s = demand.service_s or 1.0  # before any job ran: a guess of one second
    slots = usable_slots(slots_per_node, demand.per_token_s, targets.per_token_target_s)
    budget_s = max(targets.ttft_target_s * policy.queue_share, 1e-3)
    by_rate = math.ceil(servers_for_wait(rate, service_s, budget_s) / slots)
    by_queue = math.ceil(queued * service_s / (slots * targets.ttft_target_s)) if queued else 0
    wanted = max(by_rate, by_queue, 1 if queued else 0)
    why = (f"{rate:.2f}/s x {service_s:.2f} s on {slots} slots per node, wait <= {budget_s:.2f} s"
           + (f"; {queued} queued" if queued else ""))
    return wanted, why


def plan_capacity(
    nodes: Sequence[NodeModels],
    demand: Mapping[str, ModelDemand],
    queued: Mapping[str, int],
    targets: Mapping[str, ModelTargets],
    surplus_since_s: dict[str, float],
    now_s: float,
    policy: CapacityPolicy,
    queued_regions: Mapping[str, Mapping[frozenset[str], int]] | None = None,
) -> CapacityPlan:
    """The loads and unloads for this tick. `surplus_since_s` (model -> since when it has held
    more than it needs) is the planner's memory between ticks; the caller keeps it.
    `queued_regions` breaks `queued` down by what the jobs allow (model -> allowed regions, empty
    for any -> jobs); without it, every queued job may run anywhere."""
    if not policy.enabled:
        return CapacityPlan()
    eligible = [n for n in nodes if n.eligible]
    servable = {m for n in eligible for m in n.held | n.loadable}
    used_mb = {n.node_id: sum(targets[m].memory_mb for m in n.held if m in targets)
               for n in nodes}
    held_at = {n.node_id: set(n.held) for n in nodes}
    actions: list[LoadOnNode | UnloadOnNode] = []
    plans: list[ModelCapacity] = []
    loads_left = policy.max_loads_per_tick
    for model in sorted(servable):
        spec = targets.get(model)
        if spec is None:
            continue  # not in the catalogue: nothing places its jobs
        d = demand.get(model) or ModelDemand()
        by_regions = (queued_regions or {}).get(model, {})
        holders = [n for n in eligible if model in n.held]
        slots = max((n.slots for n in eligible), default=1)
        wanted, why = replicas_needed(d, spec, queued.get(model, 0), slots, now_s, policy)
        idle_s = math.inf if d.last_demand_s is None else now_s - d.last_demand_s
        floor = 1
        if policy.scale_to_zero_after_s is not None and idle_s >= policy.scale_to_zero_after_s:
            # Idle that long, the decayed arrival rate is memory, not demand.
            floor = wanted = 0
        keep = max(wanted, floor) if holders else wanted
        rate = d.rate_at(now_s, policy.rate_window_s)
        claims = region_claims(d, by_regions, keep, now_s, policy.rate_window_s)
        # Jobs that only some regions may run cannot use a replica elsewhere: however many the
        # fleet holds, a queue with none in its regions waits for a cold start on every job
        # (or for ever, if its nodes are busy with other models). One load there, first.
        loaded = 0
        for regions, count in sorted(by_regions.items(), key=lambda kv: (-kv[1], sorted(kv[0]))):
            if not regions or count <= 0 or loads_left <= 0 or any(
                    n.region in regions and model in held_at[n.node_id] for n in eligible):
                continue
            in_regions = [n for n in eligible if n.region in regions]
            for node in _load_order(in_regions, model, held_at, used_mb, spec, claims, 1):
                actions.append(LoadOnNode(
                    node.node_id, node.site, model,
                    f"capacity: {count} queued for {','.join(sorted(regions))}, no replica there"))
                held_at[node.node_id].add(model)
                used_mb[node.node_id] += spec.memory_mb
                loads_left -= 1
                loaded += 1
        # What the plan wants: the count, and a copy for each queue no replica may serve on
        # top of the replicas the count keeps (what ops see as the model's wanted replicas).
        plans.append(ModelCapacity(model, max(keep, min(len(holders), max(keep, 1)) + loaded),
                                   len(holders), rate, queued.get(model, 0),
                                   why + (f"; +{loaded} for regions with none" if loaded else "")))
        if len(holders) + loaded < wanted:
            surplus_since_s.pop(model, None)
            for node in _load_order(eligible, model, held_at, used_mb, spec, claims,
                                    min(wanted - len(holders) - loaded, loads_left)):
                actions.append(LoadOnNode(node.node_id, node.site, model,
                                          f"capacity: need {wanted}: {why}"))
                held_at[node.node_id].add(model)
                used_mb[node.node_id] += spec.memory_mb
                loads_left -= 1
            continue
        if len(holders) <= keep:
            surplus_since_s.pop(model, None)
            continue
        since_s = surplus_since_s.setdefault(model, now_s)
        after_s = policy.scale_down_after_s
        # Above a need of one or more, a surplus goes only where scale-down is configured, and
        # once it has lasted. A need of zero means the model has been idle past
        # `scale_to_zero_after_s` already: its replicas go now.
        if keep > 0 and (after_s is None or now_s - since_s < after_s):
            continue
        # A region set's last replica is what its restricted jobs would otherwise cold-start
        # for; it stays while such demand is as recent as a surplus must last before it goes.
        # At a need of zero the whole model is idle, restricted demand included.
        protected = (_region_sets_in_demand(d, by_regions, now_s, after_s)
                     if keep > 0 and after_s is not None else set())
        per_region = _count_by_region(eligible, model, held_at)
        idle_holders = [n for n in holders
                        if not n.running.get(model) and model not in n.pinned]
        reason = (f"scale to zero: no demand for {idle_s:.0f} s" if keep == 0
                  else f"capacity: need {keep}: {why}")
        going: set[str] = set()
        for _ in range(len(holders) - keep):
            candidates = [n for n in idle_holders if n.node_id not in going
                          and not _last_for_a_set(n.region, protected, per_region)]
            if not candidates:
                break
            # The replicas that go first: where the region's restricted demand stays covered
            # without it (unload where that demand is not), then where the node holds most
            # besides (its memory is wanted most), then by id, so the choice is stable from
            # tick to tick.
            node = min(candidates, key=lambda n: (
                -_coverage(per_region.get(n.region, 0) - 1, claims.get(n.region, 0.0)),
                -len(held_at[n.node_id]), n.node_id))
            going.add(node.node_id)
            per_region[node.region] -= 1
            actions.append(UnloadOnNode(node.node_id, node.site, model, reason))
            held_at[node.node_id].discard(model)
            used_mb[node.node_id] -= spec.memory_mb
        if len(holders) - len(going) <= keep:
            surplus_since_s.pop(model, None)
    replicas: dict[tuple[str, str], int] = {}
    for n in nodes:
        for model in held_at[n.node_id]:
            replicas[(n.site, model)] = replicas.get((n.site, model), 0) + 1
    return CapacityPlan(tuple(plans), tuple(actions), replicas)


def region_claims(
    demand: ModelDemand, queued_regions: Mapping[frozenset[str], int], replicas: int,
    now_s: float, window_s: float,
) -> dict[str, float]:
    """Per region, how many of the model's `replicas` its restricted demand accounts for.

    A region's demand is the arrivals that only regions including it may serve, weighted as the
    rate weights them (about the last `window_s` of arrivals), plus the queued jobs of the same
    kind, a job allowing regions R counting 1/|R| in each; its share of all the model's demand
    (what may run anywhere included) times `replicas` is its claim. Regions with no such demand
    have none."""
    jobs_by_region = {region: rate * window_s
                      for region, rate in demand.region_rates_at(now_s, window_s).items()}
    total_jobs = demand.rate_at(now_s, window_s) * window_s
    for regions, count in queued_regions.items():
        total_jobs += count
        for region in regions:
            jobs_by_region[region] = jobs_by_region.get(region, 0.0) + count / len(regions)
    if replicas <= 0 or total_jobs <= 0:
        return {}
    return {region: replicas * jobs / total_jobs
            for region, jobs in jobs_by_region.items() if jobs > 0}


def _coverage(held: int, claim: float) -> float:
    """How much of a region's claim its replicas cover, at most all of it (1.0). Without a
    claim, a region is covered whatever it holds: demand that may run anywhere does not care."""
    return min(held / claim, 1.0) if claim > 0 else 1.0


def _region_sets_in_demand(
    demand: ModelDemand, queued_regions: Mapping[frozenset[str], int], now_s: float,
    horizon_s: float,
) -> set[frozenset[str]]:
    """Sets of allowed regions with restricted demand queued now or seen within `horizon_s`."""
    sets = {rs for rs, count in queued_regions.items() if count > 0 and rs}
    sets.update(rs for rs, at_s in demand.regions_last_demand_s.items()
                if now_s - at_s < horizon_s)
    return sets


def _last_for_a_set(region: str, protected: Iterable[frozenset[str]],
                    per_region: Mapping[str, int]) -> bool:
    """Whether a replica in `region` is the last one some protected region set may use."""
    return any(region in rs and sum(per_region.get(r, 0) for r in rs) <= 1 for rs in protected)


def _count_by_region(
    eligible: Iterable[NodeModels], model: str, held_at: Mapping[str, set[str]],
) -> dict[str, int]:
    per_region: dict[str, int] = {}
    for n in eligible:
        if model in held_at[n.node_id]:
            per_region[n.region] = per_region.get(n.region, 0) + 1
    return per_region


def _load_order(
    eligible: Sequence[NodeModels], model: str, held_at: Mapping[str, set[str]],
    used_mb: Mapping[str, int], spec: ModelTargets, claims: Mapping[str, float], limit: int,
) -> list[NodeModels]:
    """The `limit` nodes that best take one more copy of the model each, best first: regions
    whose restricted demand (`claims`) is least covered by the copies there (one with such
    demand and no copy first: its jobs can use no other), then sites with fewest copies
    (spread, so one site's curtailment does not take them all), then the node with most memory
    free. Each pick is one pass over the candidates, not a sort: a fleet may have thousands of
    nodes that could load the model, and a tick loads a few."""
    per_site: dict[str, int] = {}
    for n in eligible:
        if model in held_at[n.node_id]:
            per_site[n.site] = per_site.get(n.site, 0) + 1
    per_region = _count_by_region(eligible, model, held_at)
    fits = [
        n for n in eligible
        if model in n.loadable and model not in held_at[n.node_id] and model not in n.refused
        and (n.memory_mb <= 0 or used_mb[n.node_id] + spec.memory_mb <= n.memory_mb)
    ]
    order: list[NodeModels] = []
    while fits and len(order) < limit:
        best = min(fits, key=lambda n: (_coverage(per_region.get(n.region, 0),
                                                  claims.get(n.region, 0.0)),
                                        per_site.get(n.site, 0),
                                        used_mb[n.node_id] - n.memory_mb, n.node_id))
        fits.remove(best)
        order.append(best)
        per_site[best.site] = per_site.get(best.site, 0) + 1
        per_region[best.region] = per_region.get(best.region, 0) + 1
    return order
