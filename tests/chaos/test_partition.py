"""A partition: an agent's link stops forwarding without closing, its job is placed again, and
the result it brings back for the old attempt is refused.

One scheduler for the module (the same `SchedulerApp` the Ray actor hosts, in this process, with
short leases), reached by the partitioned agent through `TcpProxy`. The guarantee checked each
time: the refused outcome gets `OutcomeAck(accepted=false)`, the job ends succeeded with the
result of the attempt that holds it, and the journal has exactly one 'outcome' row for it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hashserve.local import AgentPlan, spawn_agent, stop_process
from hashserve.v1 import customer_pb2, jobs_pb2
from scheduler.core.job_states import JobState
from scheduler.core.jobs import JobRecord
from tests.chaos.conftest import LogLines
from tests.chaos.harness import (
    EMBED,
    InProcessScheduler,
    WireAgent,
    bearer,
    customer_stub,
    embed_spec,
    run,
)
from tests.chaos.ledger import account, outcome_rows
from tests.chaos.proxy import TcpProxy

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

LEASE_S = 3.0
# Sixteen texts of ~256 tokens each: about two seconds of MiniLM on one thread here, long enough
# to cut the link while it runs, with no generation model needed.
LONG_TEXTS = [f"partition {i} " + "turbine blade maintenance report " * 40 for i in range(16)]


@pytest.fixture(scope="module")
def sched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessScheduler]:
    with InProcessScheduler(
        Path(tmp_path_factory.mktemp("partition")),
        lease_s=LEASE_S,
        disconnect_grace_s=2.0,
        agent_silence_s=2.0,
        recovery_grace_s=4.0,
        tick_s=0.2,
    ) as s:
        yield s


@pytest.fixture
def proxy(sched: InProcessScheduler) -> Iterator[TcpProxy]:
    with TcpProxy("127.0.0.1", sched.port) as p:
        yield p


def job(sched: InProcessScheduler, job_id: str) -> JobRecord:
    rec = sched.on_loop(lambda app: app.loop.get(job_id))
    assert rec is not None
    return rec


async def wait_for(predicate: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")


def test_outcome_of_a_replaced_attempt_is_refused_after_the_link_heals(
    sched: InProcessScheduler, proxy: TcpProxy
) -> None:
    """Exact, message by message: two agents spoken by hand, one behind the proxy."""
    creds = sched.credentials

    async def go() -> tuple[str, str]:
        p = WireAgent(proxy.address, creds.agent_token, "wire-p", region="europe")
        q = WireAgent(sched.address, creds.agent_token, "wire-q", region="europe")
        channel, stub = customer_stub(sched.address)
        try:
            await p.connect()
            await p.recv_kind("welcome")
            p.beat()
            resp = await stub.SubmitJob(
                customer_pb2.SubmitJobRequest(spec=embed_spec("cut me off", regions=("europe",))),
                metadata=bearer(creds.api_key),
            )
            job_id = resp.job.id
            first = await p.recv_kind("assign")
            assert first.assign.ref.attempt == 1
            p.started(job_id, 1)
            await wait_for(lambda: job(sched, job_id).state is JobState.RUNNING, 5, "running")
            await q.connect()
            await q.recv_kind("welcome")
            q.beat()

            proxy.pause()
            # The partitioned agent finishes and reports; the bytes wait in the dead link.
            p.outcome(job_id, 1, text="late result of attempt 1")
            await wait_for(lambda: job(sched, job_id).attempt >= 2, 4 * LEASE_S, "re-placement")
            holder = job(sched, job_id).node_id
            print(f"attempt 2 placed on {holder}")
            if holder == "wire-q":
                second = await q.recv_kind("assign")
                attempt = second.assign.ref.attempt
                q.started(job_id, attempt)
                q.outcome(job_id, attempt, text="result of the attempt that holds the job")
                ack = await q.recv_kind("ack")
                assert ack.ack.accepted, ack.ack.reason

            proxy.resume()
            refused = await p.recv_kind("ack", timeout_s=10)
            assert refused.ack.ref.job_id == job_id and refused.ack.ref.attempt == 1
            assert not refused.ack.accepted
            reason = refused.ack.reason
            assert "stale attempt 1" in reason or "already answered" in reason
            if holder == "wire-p":
                # Placed again on the silent agent (see test_a_silent_agent_gets_no_new_work):
                # it runs the new attempt once the link is back.
                second = await p.recv_kind("assign")
                attempt = second.assign.ref.attempt
                p.started(job_id, attempt)
                p.outcome(job_id, attempt, text="result of the attempt that holds the job")
                assert (await p.recv_kind("ack")).ack.accepted
            final = await stub.GetJob(
                customer_pb2.GetJobRequest(job_id=job_id), metadata=bearer(creds.api_key)
            )
            return job_id, final.result.text
        finally:
            await p.close()
            await q.close()
            await channel.close()

    job_id, text = run(go())
    assert text == "result of the attempt that holds the job"
    rec = job(sched, job_id)
    assert rec.state is JobState.SUCCEEDED and rec.attempt >= 2
    rows = outcome_rows(sched.journal_path, [job_id])[job_id]
    assert len(rows) == 1 and rows[0]["attempt"] == rec.attempt
    counts = account("partition, wire agents", sched.journal_path, {"partitioned": job_id})
    assert (counts.lost, counts.duplicated) == (0, 0)


@pytest.mark.parametrize("heal", ["resume", "reconnect"])
def test_real_agent_partitioned_mid_job_its_late_result_is_refused(
    sched: InProcessScheduler, proxy: TcpProxy, scheduler_log: LogLines, heal: str,
    tmp_path: Path,
) -> None:
    """A real agent process behind the proxy; the link heals by resuming or by reconnecting."""
    creds = sched.credentials
    region = "south_america" if heal == "resume" else "asia_pacific"
    p_plan = AgentPlan(f"part-p-{heal}", f"site-p-{heal}", region, max_concurrent_jobs=1)
    q_plan = AgentPlan(f"part-q-{heal}", f"site-q-{heal}", region, max_concurrent_jobs=1)
    p_log, q_log = tmp_path / "p.log", tmp_path / "q.log"
    p_proc = spawn_agent(p_plan, proxy.address, creds.agent_token, p_log)
    q_proc = None
    try:

        def connected(node_id: str) -> bool:
            return bool(
                sched.on_loop(
                    lambda app: node_id in app.loop.core.nodes
                    and app.loop.core.nodes[node_id].connected
                )
            )

        async def go() -> str:
            nonlocal q_proc
            channel, stub = customer_stub(sched.address)
            try:
                await wait_for(lambda: connected(p_plan.agent_id), 60, "agent p")
                spec = jobs_pb2.JobSpec(
                    model=EMBED, embed=jobs_pb2.EmbedInput(texts=LONG_TEXTS),
                    allowed_regions=[region],
                )
                resp = await stub.SubmitJob(
                    customer_pb2.SubmitJobRequest(spec=spec), metadata=bearer(creds.api_key)
                )
                job_id = resp.job.id
                await wait_for(
                    lambda: job(sched, job_id).state is JobState.RUNNING, 30, "running on p"
                )
                proxy.pause()
                paused_at = time.monotonic()
                assert job(sched, job_id).node_id == p_plan.agent_id
                q_proc = spawn_agent(q_plan, sched.address, creds.agent_token, q_log)

                def moved_on() -> bool:
                    rec = job(sched, job_id)
                    if rec.state is JobState.SUCCEEDED:
                        return True
                    # Placed again on p itself: heal once p has surely finished attempt 1.
                    return rec.attempt >= 2 and time.monotonic() - paused_at > 3 * LEASE_S

                await wait_for(moved_on, 90, "attempt 2 to finish or p to finish attempt 1")
                if heal == "resume":
                    proxy.resume()
                else:
                    proxy.sever()  # the old connection is gone; the agent dials again
                    proxy.resume()
                await wait_for(
                    lambda: job(sched, job_id).state is JobState.SUCCEEDED, 60, "success"
                )
                await wait_for(
                    lambda: bool(scheduler_log.grep("refused outcome of", job_id, "attempt 1")),
                    20,
                    "the late outcome of attempt 1 to arrive and be refused",
                )
                # The agent itself is told: its log gets the scheduler's refusal of attempt 1.
                await wait_for(
                    lambda: f"refused outcome of {job_id} attempt 1" in p_log.read_text(),
                    20,
                    "the agent to hear that its late outcome was refused",
                )
                return job_id
            finally:
                await channel.close()

        job_id = run(go())
    finally:
        stop_process(p_proc)
        if q_proc is not None:
            stop_process(q_proc)
    rec = job(sched, job_id)
    print(f"{heal}: attempts {rec.history}")
    assert rec.attempt >= 2 and rec.state is JobState.SUCCEEDED
    assert len(rec.history) >= 2 and rec.history[0] == f"{p_plan.agent_id}#1"
    rows = outcome_rows(sched.journal_path, [job_id])[job_id]
    assert len(rows) == 1 and rows[0]["attempt"] == rec.attempt
    counts = account(f"partition, real agent, {heal}", sched.journal_path, {heal: job_id})
    assert (counts.lost, counts.duplicated) == (0, 0)


def test_a_silent_agent_gets_no_new_work(sched: InProcessScheduler, proxy: TcpProxy) -> None:
    creds = sched.credentials

    async def go() -> list[str]:
        p = WireAgent(proxy.address, creds.agent_token, "silent-p", region="north_america",
                      site="silent-site", slots=4)
        q = WireAgent(sched.address, creds.agent_token, "live-q", region="north_america",
                      site="live-site", slots=1)
        channel, stub = customer_stub(sched.address)
        try:
            for a in (p, q):
                await a.connect()
                await a.recv_kind("welcome")
                a.beat()
            proxy.pause()
            # Silent for longer than the disconnect grace (2 s) plus heartbeats missed.
            await asyncio.sleep(4.0)
            nodes = []
            for i in range(3):
                resp = await stub.SubmitJob(
                    customer_pb2.SubmitJobRequest(
                        spec=embed_spec(f"silent {i}", regions=("north_america",))
                    ),
                    metadata=bearer(creds.api_key),
                )
                await asyncio.sleep(0.5)  # a few ticks: placed wherever the core sees room
                nodes.append(job(sched, resp.job.id).node_id)
            return nodes
        finally:
            proxy.resume()
            await p.close()
            await q.close()
            await channel.close()

    nodes = run(go())
    assert "silent-p" not in nodes, nodes
