"""Overload: more submits than the fleet can serve get RESOURCE_EXHAUSTED (per-tenant rate and
quota, capacity kept by tier) or wait in the queue by tier; interactive work overtakes flex.

The first tests drive `Admission` on a real `ControlLoop` and journal with a manual clock (each
number worked by hand); the rest go through a real server (`SchedulerApp` in this process) and,
for the queue order, a real agent process. Memory under a long queue is measured by
`python bench/soak.py --queue N` (figures belong in benchmarks, not tests); what a test checks
is the bound itself: past `max_active_jobs`, submits are refused and nothing more is held.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from hashserve.local import AgentPlan, spawn_agent, stop_process
from hashserve.v1 import customer_pb2, jobs_pb2
from scheduler.api.admission import Admission, AdmissionLimits, AdmissionRefused
from scheduler.control.loop import ControlLoop, new_job_id
from scheduler.core.clock import ManualClock
from scheduler.core.jobs import JobRecord, JobSpecData
from scheduler.core.models import DEFAULT_CATALOGUE, MINILM, Tier
from scheduler.journal.base import TenantRow
from scheduler.journal.sqlite import SqliteJournal
from tests.chaos.harness import (
    InProcessScheduler,
    bearer,
    customer_stub,
    embed_spec,
    issue_key,
    run,
)
from tests.chaos.ledger import account, wait_until_final

pytestmark = pytest.mark.chaos

T0_S = 1_700_000_000.0


# ----- admission on a real loop, by hand ------------------------------------------------------


def make_record(tenant: str, tier: Tier = Tier.STANDARD, blob: bytes = b"x" * 100) -> JobRecord:
    spec = JobSpecData(
        model=MINILM.name, kind=MINILM.kind, tier=tier, input_tokens=10, output_tokens_est=0,
        deadline_s=T0_S + 3600,
    )
    return JobRecord(new_job_id(), tenant, spec, blob, T0_S)


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[ControlLoop]:
    journal = SqliteJournal(tmp_path / "journal.db", synchronous="NORMAL")
    try:
        yield ControlLoop(journal, DEFAULT_CATALOGUE, ["europe"], ManualClock(T0_S))
    finally:
        journal.close()


def admit_and_submit(admission: Admission, loop: ControlLoop, recs: list[JobRecord]) -> None:
    admission.admit(recs[0].tenant, recs)
    loop.submit(recs)


def test_rate_limit_is_a_token_bucket_per_tenant(loop: ControlLoop) -> None:
    loop.journal.upsert_tenant(TenantRow("slow", 1000, 5.0))
    admission = Admission(loop, AdmissionLimits(burst_s=2.0))
    clock = loop.clock
    assert isinstance(clock, ManualClock)
    # 5/s for 2 s: a full bucket holds 10 submits.
    for _ in range(10):
        admit_and_submit(admission, loop, [make_record("slow")])
    with pytest.raises(AdmissionRefused, match=r"rate limit of 5 submits/s .*retry in 0\.20 s"):
        admission.admit("slow", [make_record("slow")])
    # 0.4 s later 2 tokens are back: a batch of 2 passes, a third waits.
    clock.advance(0.4)
    admit_and_submit(admission, loop, [make_record("slow"), make_record("slow")])
    with pytest.raises(AdmissionRefused):
        admission.admit("slow", [make_record("slow")])
    # Another tenant (no row: the defaults, 200/s) is not slowed by this one.
    admit_and_submit(admission, loop, [make_record("other") for _ in range(50)])
    # A batch bigger than the bucket can never pass: said so, not "retry".
    with pytest.raises(AdmissionRefused, match=r"over tenant 'slow'.s burst of 10"):
        admission.admit("slow", [make_record("slow") for _ in range(11)])
    # A clock stepping back does not drain the bucket (elapsed is never negative).
    clock.advance(10.0)
    admit_and_submit(admission, loop, [make_record("slow")])  # full bucket, 9 left
    clock.advance(-5.0)  # 9 + (-5 s * 5/s) would be -16 if elapsed were not clamped
    admit_and_submit(admission, loop, [make_record("slow") for _ in range(9)])
    assert admission.refused == 3


def test_quota_counts_active_jobs_and_frees_when_they_end(loop: ControlLoop) -> None:
    loop.journal.upsert_tenant(TenantRow("small", 3, 1000.0))
    admission = Admission(loop)
    recs = [make_record("small") for _ in range(3)]
    admit_and_submit(admission, loop, recs)
    assert admission.active_jobs("small") == 3
    with pytest.raises(AdmissionRefused, match="has 3 jobs queued or running and its quota is 3"):
        admission.admit("small", [make_record("small")])
    loop.cancel(recs[0].job_id)  # a terminal step: the observer frees the place
    assert admission.active_jobs("small") == 2
    admit_and_submit(admission, loop, [make_record("small")])
    # A resubmit deduplicated by its key is not a new active job.
    keyed = make_record("other").evolve(idempotency_key="k1", spec_hash="h")
    admit_and_submit(admission, loop, [keyed])
    loop.submit([keyed.evolve(job_id=new_job_id())])
    assert admission.active_jobs("other") == 1


def test_capacity_is_kept_for_interactive_work_as_the_queue_fills(loop: ControlLoop) -> None:
    admission = Admission(loop, AdmissionLimits(max_active_jobs=20))
    # Shares 0.7 / 0.85 / 1.0 of 20 places: flex may fill 14, standard 17, interactive 20.
    admit_and_submit(admission, loop, [make_record("t", Tier.FLEX) for _ in range(14)])
    with pytest.raises(AdmissionRefused, match="full for flex work: 14 jobs are active"):
        admission.admit("t", [make_record("t", Tier.FLEX)])
    admit_and_submit(admission, loop, [make_record("t", Tier.STANDARD) for _ in range(3)])
    with pytest.raises(AdmissionRefused, match="may fill 17 of its 20 places"):
        admission.admit("t", [make_record("t", Tier.STANDARD)])
    admit_and_submit(admission, loop, [make_record("t", Tier.INTERACTIVE) for _ in range(3)])
    with pytest.raises(AdmissionRefused, match="full for interactive work: 20 jobs"):
        admission.admit("t", [make_record("t", Tier.INTERACTIVE)])
    assert admission.active_jobs() == 20


def test_capacity_also_bounds_the_bytes_of_queued_inputs(loop: ControlLoop) -> None:
    admission = Admission(loop, AdmissionLimits(max_active_spec_bytes=10_000))
    big = b"y" * 3_000
    # Interactive may fill all 10,000 bytes: three 3,000-byte jobs, not a fourth.
    admit_and_submit(
        admission, loop, [make_record("t", Tier.INTERACTIVE, big) for _ in range(3)]
    )
    assert admission.active_spec_bytes == 9_000
    with pytest.raises(AdmissionRefused, match="inputs take 0 MiB"):
        admission.admit("t", [make_record("t", Tier.INTERACTIVE, big)])


def test_restored_jobs_count_against_quota_after_a_restart(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "journal.db", synchronous="NORMAL")
    try:
        journal.upsert_tenant(TenantRow("r", 2, 100.0))
        first = ControlLoop(journal, DEFAULT_CATALOGUE, ["europe"], ManualClock(T0_S))
        first.submit([make_record("r"), make_record("r")])
        # A new loop recovers them (as after a crash); a new admission sees them at once.
        second = ControlLoop(journal, DEFAULT_CATALOGUE, ["europe"], ManualClock(T0_S))
        second.core.restore(journal.load_active_jobs(), T0_S)
        admission = Admission(second)
        with pytest.raises(AdmissionRefused, match="quota is 2"):
            admission.admit("r", [make_record("r")])
    finally:
        journal.close()


# ----- through the server ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def sched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessScheduler]:
    with InProcessScheduler(Path(tmp_path_factory.mktemp("overload")), tick_s=0.1) as s:
        yield s


def admission_of(sched: InProcessScheduler) -> Admission:
    found = sched.on_loop(
        lambda app: [o for o in app.loop.observers if isinstance(o, Admission)]
    )
    assert len(found) == 1
    return found[0]


def count_jobs(sched: InProcessScheduler, tenant: str) -> int:
    db = sqlite3.connect(f"file:{sched.journal_path}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT count(*) FROM jobs WHERE tenant=?", (tenant,)).fetchone()[0])
    finally:
        db.close()


async def submit_all(
    sched: InProcessScheduler, key: str, specs: list[jobs_pb2.JobSpec]
) -> tuple[list[str], list[str]]:
    """(job ids accepted, messages of the refusals); any other status fails the test."""
    channel, stub = customer_stub(sched.address)
    accepted, refused = [], []
    try:
        for spec in specs:
            try:
                resp = await stub.SubmitJob(
                    customer_pb2.SubmitJobRequest(spec=spec), metadata=bearer(key)
                )
                accepted.append(resp.job.id)
            except grpc.aio.AioRpcError as err:
                assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err
                refused.append(err.details() or "")
    finally:
        await channel.close()
    return accepted, refused


def parked(i: int, tier: jobs_pb2.Tier = jobs_pb2.TIER_STANDARD) -> jobs_pb2.JobSpec:
    # No agent serves south_america in this module: these stay queued, holding their places.
    return embed_spec(f"parked {i}", tier, ("south_america",))


def test_over_quota_and_over_rate_get_resource_exhausted_and_journal_nothing(
    sched: InProcessScheduler,
) -> None:
    quota_key = issue_key(sched.journal_path, "quota-tenant", max_queued_jobs=20, rate=1000.0)
    accepted, refused = run(submit_all(sched, quota_key, [parked(i) for i in range(30)]))
    assert len(accepted) == 20 and len(refused) == 10
    assert all("quota is 20" in m and "Wait for some to finish" in m for m in refused)
    assert count_jobs(sched, "quota-tenant") == 20

    rate_key = issue_key(sched.journal_path, "rate-tenant", max_queued_jobs=1000, rate=4.0)
    accepted, refused = run(submit_all(sched, rate_key, [parked(i) for i in range(20)]))
    # A bucket of 4/s * 2 s = 8; the 20 submits take well under the ~0.25 s a token takes.
    assert 8 <= len(accepted) <= 10, len(accepted)
    assert refused and all("rate limit of 4 submits/s" in m and "retry in" in m for m in refused)
    assert count_jobs(sched, "rate-tenant") == len(accepted)
    # The server is fine: another tenant is served at once.
    accepted, refused = run(submit_all(sched, sched.credentials.api_key, [parked(0)]))
    assert len(accepted) == 1 and not refused


def test_a_full_scheduler_refuses_flex_first_and_keeps_room_for_interactive(
    sched: InProcessScheduler,
) -> None:
    admission = admission_of(sched)
    base = admission.active_jobs()
    original = admission.limits
    # 40 more places than are taken now: flex may fill 0.7 of the total, interactive all of it.
    total = base + 40
    admission.limits = AdmissionLimits(max_active_jobs=total)
    key = issue_key(sched.journal_path, "flood", max_queued_jobs=10_000, rate=10_000.0)
    try:
        flex_room = int(total * 0.7) - base
        flex_ok, flex_refused = run(
            submit_all(sched, key, [parked(i, jobs_pb2.TIER_FLEX) for i in range(60)])
        )
        assert len(flex_ok) == max(flex_room, 0)
        assert all("full for flex work" in m and "submit as interactive" in m
                   for m in flex_refused)
        inter_ok, inter_refused = run(
            submit_all(sched, key, [parked(i, jobs_pb2.TIER_INTERACTIVE) for i in range(60)])
        )
        assert len(flex_ok) + len(inter_ok) == 40  # every place, and not one more
        assert all("full for interactive work" in m for m in inter_refused)
        assert admission.active_jobs() == total
        print(
            f"capacity {total}: flex admitted {len(flex_ok)} refused {len(flex_refused)}; "
            f"interactive admitted {len(inter_ok)} refused {len(inter_refused)}"
        )
    finally:
        admission.limits = original


QUEUED_AFTER_S = 0.2  # from admission (submitted_s) until the job is durable and queued, at most


@pytest.mark.integration
def test_interactive_jobs_overtake_a_flex_backlog(
    sched: InProcessScheduler, tmp_path: Path
) -> None:
    """One agent (2 slots) and a flood of flex work; interactive jobs sent into the flood are
    placed ahead of every flex job that was waiting when they arrived."""
    region = "asia_pacific"
    agent = spawn_agent(
        AgentPlan("overload-1", "overload-site", region, max_concurrent_jobs=2),
        sched.address, sched.credentials.agent_token, tmp_path / "agent.log",
    )
    key = issue_key(sched.journal_path, "mixed", max_queued_jobs=10_000, rate=10_000.0)
    text = "solar curtailment settlement notice " * 20  # ~180 tokens: tens of ms a job
    try:

        async def go() -> tuple[dict[str, str], list[str], list[str]]:
            channel, stub = customer_stub(sched.address)
            md = bearer(key)
            acked: dict[str, str] = {}
            flex: list[str] = []
            inter: list[str] = []
            try:
                while not sched.on_loop(
                    lambda app: "overload-1" in app.loop.core.nodes
                    and app.loop.core.nodes["overload-1"].connected
                ):
                    await asyncio.sleep(0.2)
                for part in ("a", "b"):  # 400 flex jobs, two full batches
                    resp = await stub.SubmitJobs(
                        customer_pb2.SubmitJobsRequest(
                            jobs=[
                                customer_pb2.SubmitJobRequest(
                                    spec=embed_spec(f"{text} {part}{i}", jobs_pb2.TIER_FLEX,
                                                    (region,)),
                                    idempotency_key=f"flex-{part}{i}",
                                )
                                for i in range(200)
                            ]
                        ),
                        metadata=md,
                    )
                    flex += [r.job.id for r in resp.jobs]
                for i in range(8):
                    await asyncio.sleep(0.25)
                    resp1 = await stub.SubmitJob(
                        customer_pb2.SubmitJobRequest(
                            spec=embed_spec(f"urgent {i}", jobs_pb2.TIER_INTERACTIVE, (region,)),
                            idempotency_key=f"urgent-{i}",
                        ),
                        metadata=md,
                    )
                    inter.append(resp1.job.id)
                acked.update({f"f{i}": j for i, j in enumerate(flex)})
                acked.update({f"i{i}": j for i, j in enumerate(inter)})
                return acked, flex, inter
            finally:
                await channel.close()

        acked, flex, inter = run(go())
        wait_until_final(sched.journal_path, list(acked.values()), 180)
    finally:
        stop_process(agent)
    db = sqlite3.connect(f"file:{sched.journal_path}?mode=ro", uri=True)
    try:
        times = {
            j: (s, a, f)
            for j, s, a, f in db.execute(
                "SELECT job_id, submitted_s, assigned_s, finished_s FROM jobs WHERE tenant='mixed'"
            )
        }
    finally:
        db.close()
    overtaken = 0
    for j in inter:
        submitted_s, assigned_s, _ = times[j]
        # Flex jobs already waiting when this interactive job arrived...
        waiting = [f for f in flex if times[f][0] <= submitted_s < times[f][1]]
        # ...were all placed after it (interactive first in the queue), once it was in the queue:
        # a submit is journalled (group commit, off the loop) before it is queued, so a flex job
        # placed in that moment, on a loaded machine tens of ms, was placed before it existed.
        late = [f for f in waiting if submitted_s + QUEUED_AFTER_S < times[f][1] < assigned_s]
        assert not late, f"{len(late)} flex jobs waiting before {j} were placed ahead of it"
        overtaken += len(waiting)
    assert overtaken > 0, "the flex backlog had drained before the interactive jobs came"

    def pct(xs: list[float], q: float) -> float:
        xs = sorted(xs)
        return xs[min(int(q * len(xs)), len(xs) - 1)]

    inter_s = [times[j][2] - times[j][0] for j in inter]
    flex_s = [times[j][2] - times[j][0] for j in flex]
    print(
        f"interactive latency p50 {pct(inter_s, 0.5):.2f} s p100 {max(inter_s):.2f} s "
        f"(target {MINILM.tiers[Tier.INTERACTIVE].latency_target_s:.0f} s); flex p50 "
        f"{pct(flex_s, 0.5):.2f} s p100 {max(flex_s):.2f} s; {overtaken} flex waits overtaken"
    )
    counts = account("overload, interactive vs flex", sched.journal_path, acked, tenant="mixed")
    assert (counts.lost, counts.duplicated) == (0, 0)



def test_a_retry_at_quota_gets_its_original_job(sched: InProcessScheduler) -> None:
    key = issue_key(sched.journal_path, "retry-tenant", max_queued_jobs=3, rate=1000.0)

    async def go() -> tuple[list[str], list[str], grpc.StatusCode]:
        channel, stub = customer_stub(sched.address)
        try:
            first = [
                (await stub.SubmitJob(customer_pb2.SubmitJobRequest(
                    spec=parked(i), idempotency_key=f"order-{i}"), metadata=bearer(key))).job.id
                for i in range(3)
            ]
            # At quota now: the same requests again are answered with their jobs...
            again = []
            for i in range(3):
                reply = await stub.SubmitJob(customer_pb2.SubmitJobRequest(
                    spec=parked(i), idempotency_key=f"order-{i}"), metadata=bearer(key))
                assert reply.deduplicated
                again.append(reply.job.id)
            # ... and a new one is refused.
            try:
                await stub.SubmitJob(customer_pb2.SubmitJobRequest(
                    spec=parked(9), idempotency_key="order-9"), metadata=bearer(key))
                code = grpc.StatusCode.OK
            except grpc.aio.AioRpcError as err:
                code = err.code()
            return first, again, code
        finally:
            await channel.close()

    first, again, code = run(go())
    assert again == first and code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert count_jobs(sched, "retry-tenant") == 3


def test_a_tenant_may_hold_only_so_many_watches(tmp_path: Path) -> None:
    with InProcessScheduler(tmp_path / "watches", tick_s=0.1, max_watches_per_tenant=2) as s:
        async def go() -> grpc.StatusCode:
            channel, stub = customer_stub(s.address)
            key = s.credentials.api_key
            try:
                job_id = (await stub.SubmitJob(customer_pb2.SubmitJobRequest(spec=parked(0)),
                                               metadata=bearer(key))).job.id
                held = [stub.WatchJob(customer_pb2.WatchJobRequest(job_id=job_id),
                                      metadata=bearer(key)) for _ in range(2)]
                for call in held:
                    await call.read()  # each is open, past its first event
                third = stub.WatchJob(customer_pb2.WatchJobRequest(job_id=job_id),
                                      metadata=bearer(key))
                try:
                    await third.read()
                    return grpc.StatusCode.OK
                except grpc.aio.AioRpcError as err:
                    assert "watches open" in (err.details() or "")
                    return err.code()
                finally:
                    for call in held:
                        call.cancel()
            finally:
                await channel.close()

        assert run(go()) == grpc.StatusCode.RESOURCE_EXHAUSTED
