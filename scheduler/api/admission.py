"""Admission: whether a tenant's submit may enter the scheduler at all, before it is journalled.

What it decides, per submit (a SubmitJobs call counts as one submit per job; work a Batch API
batch feeds in counts against quota and capacity only, see `admit`):
- **rate**: a token bucket per tenant, refilled at the tenant's `submits_per_second` and holding
  `burst_s` seconds of it, so a tenant can burst briefly but not sustain more than its rate;
- **tenant quota**: at most `max_queued_jobs` of the tenant's jobs may be active (queued, assigned
  or running) at once;
- **capacity, by tier**: the whole scheduler holds at most `max_active_jobs` active jobs and
  `max_active_spec_bytes` of their specs, which bounds its memory however many tenants flood it;
  flex work may fill only `tier_share[FLEX]` of that and standard `tier_share[STANDARD]`, so when
  the queue is long the last room is kept for interactive work.
A refusal is an `AdmissionRefused` whose message says which limit, its value, and what to do; the
customer service answers it with RESOURCE_EXHAUSTED. Nothing refused is journalled.

What it leaves to others: authentication (done before), validation and idempotency (after), the
order in which admitted work runs (the core's queue: interactive first), and the limits' values
(the tenant row in the journal, written through the admin API; defaults below otherwise).

It learns which jobs are active by watching the control loop as an observer (submitted jobs in,
terminal jobs out), seeded from the core's jobs when it is built, so each check is O(1) and is
exact: the check and the journal insert run on the same event loop with no await in between.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from scheduler.control.loop import ControlLoop
from scheduler.core.jobs import JobRecord
from scheduler.core.models import Tier
from scheduler.core.scheduler import NodeState, Step
from scheduler.journal.base import TenantRow

log = logging.getLogger("hashserve.scheduler.admission")


class AdmissionRefused(Exception):
    """A submit that may not enter now; the message is what the customer reads."""


@dataclass(frozen=True)
class AdmissionLimits:
    # About 1.8 KiB of scheduler memory per queued one-sentence job (its JobRecord, queue and
    # index entries, spec): `python bench/soak.py --queue 50000` took the actor from 140 to
    # 226 MiB RSS. So 100,000 active jobs hold ~180 MiB plus what larger specs add, which the
    # byte limit bounds (512 MiB: a thousand of the largest, 64 texts of 8 KiB, fit in it).
    max_active_jobs: int = 100_000
    max_active_spec_bytes: int = 512 * 1024 * 1024
    # Share of the capacity each tier may fill. Interactive gets all of it: a flood of flex work
    # is refused while 30% of the room is still kept for interactive and standard work.
    tier_share: Mapping[Tier, float] = field(
        default_factory=lambda: {Tier.INTERACTIVE: 1.0, Tier.STANDARD: 0.85, Tier.FLEX: 0.7}
    )
    burst_s: float = 2.0  # a bucket holds this many seconds of the tenant's rate
    tenant_cache_s: float = 5.0  # tenant limits changed by ops apply within this long
    # For a tenant without a row in the journal; the same as Authenticator.create_tenant's.
    default_max_queued_jobs: int = 10_000
    default_submits_per_second: float = 200.0


DEFAULT_LIMITS = AdmissionLimits()


@dataclass
class _Bucket:
    tokens: float
    updated_s: float


@dataclass(frozen=True)
class _Active:
    tenant: str
    tier: Tier
    spec_bytes: int


class Admission:
    """Per-tenant rate limits and quotas and a tier-aware capacity bound; a loop observer."""

    def __init__(self, loop: ControlLoop, limits: AdmissionLimits = DEFAULT_LIMITS) -> None:
        self.loop = loop
        self.limits = limits
        self._active: dict[str, _Active] = {}
        self._per_tenant: dict[str, int] = {}
        self._spec_bytes = 0
        self._buckets: dict[str, _Bucket] = {}
        self._tenants: dict[str, tuple[float, TenantRow]] = {}
        self.refused = 0
        self.on_submitted(list(loop.core.jobs.values()))
        loop.observers.append(self)

    # ----- the check --------------------------------------------------------------------------

    def admit(self, tenant: str, records: Sequence[JobRecord], rate_limited: bool = True) -> None:
        """Raise AdmissionRefused, or take `len(records)` tokens from the tenant's bucket.

        `rate_limited` False is for work a batch feeds in (the Batch API): its lines were
        accepted at once when the batch was created, and its runner keeps only part of the
        tenant's quota queued at a time, so the per-request rate and burst do not apply; quota
        and capacity do."""
        if not records:
            return
        now_s = self.loop.clock.now_s()
        row = self._tenant(tenant, now_s)
        try:
            self._check_quota(row, len(records))
            self._check_capacity(records)
            if rate_limited:
                self._take_tokens(row, len(records), now_s)
        except AdmissionRefused as refusal:
            self.refused += 1
            log.info("refused %d job(s) of %s: %s", len(records), tenant, refusal)
            raise

    def _check_quota(self, row: TenantRow, n: int) -> None:
        active = self._per_tenant.get(row.name, 0)
        if active + n > row.max_queued_jobs:
            raise AdmissionRefused(
                f"tenant {row.name!r} has {active} jobs queued or running and its quota is "
                f"{row.max_queued_jobs}; {n} more would exceed it. Wait for some to finish "
                "(or cancel some), then retry"
            )

    def _check_capacity(self, records: Sequence[JobRecord]) -> None:
        lim = self.limits
        total = len(self._active)
        spec_bytes = self._spec_bytes
        for i, rec in enumerate(records, start=1):
            spec_bytes += len(rec.spec_blob)
            share = lim.tier_share.get(rec.spec.tier, 1.0)
            cap = math.floor(lim.max_active_jobs * share)
            if total + i > cap:
                raise AdmissionRefused(
                    f"the scheduler is full for {rec.spec.tier.value} work: {total} jobs are "
                    f"active and {rec.spec.tier.value} work may fill {cap} of its "
                    f"{lim.max_active_jobs} places. Retry later"
                    + ("" if share >= 1.0 else ", or submit as interactive if it is urgent")
                )
            if spec_bytes > lim.max_active_spec_bytes * share:
                raise AdmissionRefused(
                    f"the scheduler is full for {rec.spec.tier.value} work: active jobs' inputs "
                    f"take {self._spec_bytes / 2**20:.0f} MiB, the limit for this tier is "
                    f"{lim.max_active_spec_bytes * share / 2**20:.0f} MiB. Retry later"
                )

    def _take_tokens(self, row: TenantRow, n: int, now_s: float) -> None:
        rate = row.submits_per_second
        if not math.isfinite(rate) or rate <= 0.0:
            raise AdmissionRefused(
                f"tenant {row.name!r} may not submit: its rate limit is {rate} submits/s"
            )
        burst = max(rate * self.limits.burst_s, 1.0)
        if n > burst:
            raise AdmissionRefused(
                f"a batch of {n} jobs is over tenant {row.name!r}'s burst of {burst:.0f} "
                f"submits ({rate:g}/s for {self.limits.burst_s:g} s); send smaller batches"
            )
        bucket = self._buckets.get(row.name)
        if bucket is None:
            bucket = self._buckets[row.name] = _Bucket(burst, now_s)
        # A clock that steps back (NTP) must not drain the bucket: elapsed is never negative.
        elapsed_s = max(now_s - bucket.updated_s, 0.0)
        bucket.tokens = min(burst, bucket.tokens + elapsed_s * rate)
        bucket.updated_s = now_s
        if bucket.tokens < n:
            wait_s = (n - bucket.tokens) / rate
            raise AdmissionRefused(
                f"tenant {row.name!r} is over its rate limit of {rate:g} submits/s "
                f"(burst {burst:.0f}); retry in {wait_s:.2f} s"
            )
        bucket.tokens -= n

    def _tenant(self, name: str, now_s: float) -> TenantRow:
        cached = self._tenants.get(name)
        if cached is not None and now_s - cached[0] < self.limits.tenant_cache_s:
            return cached[1]
        row = self.loop.journal.get_tenant(name) or TenantRow(
            name, self.limits.default_max_queued_jobs, self.limits.default_submits_per_second
        )
        self._tenants[name] = (now_s, row)
        return row

    # ----- what is active (a LoopObserver) ----------------------------------------------------

    def room(self, tenant: str) -> int:
        """How many more jobs the tenant's quota takes now (a batch runner's pace)."""
        row = self._tenant(tenant, self.loop.clock.now_s())
        return max(row.max_queued_jobs - self._per_tenant.get(tenant, 0), 0)

    def active_jobs(self, tenant: str | None = None) -> int:
        return len(self._active) if tenant is None else self._per_tenant.get(tenant, 0)

    @property
    def active_spec_bytes(self) -> int:
        return self._spec_bytes

    def on_submitted(self, records: Sequence[JobRecord]) -> None:
        for rec in records:
            if rec.terminal or rec.job_id in self._active:
                continue
            self._active[rec.job_id] = _Active(rec.tenant, rec.spec.tier, len(rec.spec_blob))
            self._per_tenant[rec.tenant] = self._per_tenant.get(rec.tenant, 0) + 1
            self._spec_bytes += len(rec.spec_blob)

    def on_step(self, step: Step, now_s: float, decide_s: float) -> None:
        for rec in step.changed:
            if rec.terminal:
                self._forget(rec.job_id)

    def on_node_forgotten(self, node_id: str) -> None:
        return None

    def on_commit(self, submits: int, seconds: float) -> None:
        return None

    def on_node(self, node: NodeState, now_s: float) -> None:
        return None

    def on_queue(self, jobs: Mapping[str, JobRecord],
                 queued_by_tier: Mapping[Tier, int]) -> None:
        # Once a tick, a cheap consistency check against the core's own jobs: should any job
        # have left (or entered) without the events above, resynchronise, so a missed event can
        # never hold a tenant's quota for good.
        if len(jobs) != len(self._active):
            for job_id in [j for j in self._active if j not in jobs]:
                self._forget(job_id)
            self.on_submitted([r for r in jobs.values() if r.job_id not in self._active])

    def _forget(self, job_id: str) -> None:
        gone = self._active.pop(job_id, None)
        if gone is None:
            return
        left = self._per_tenant.get(gone.tenant, 0) - 1
        if left > 0:
            self._per_tenant[gone.tenant] = left
        else:
            self._per_tenant.pop(gone.tenant, None)
        self._spec_bytes -= gone.spec_bytes
