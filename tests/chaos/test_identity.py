"""Who may do what: agents cannot act as another agent or touch jobs not theirs, customers cannot
reach another tenant's jobs, and credentials are stored hashed and compared in constant time.

One scheduler for the module (`SchedulerApp` in this process); agents are spoken by hand so that
each forbidden message is sent exactly as a hostile or broken agent would send it.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from hashserve.v1 import agent_pb2, customer_pb2, jobs_pb2
from scheduler.api.auth import Authenticator, AuthError, key_id_of
from scheduler.core.jobs import JobRecord
from scheduler.journal.sqlite import SqliteJournal
from tests.chaos.harness import (
    InProcessScheduler,
    WireAgent,
    bearer,
    customer_stub,
    embed_spec,
    issue_agent_token,
    issue_key,
    run,
)
from tests.chaos.ledger import account, outcome_rows

pytestmark = [pytest.mark.chaos, pytest.mark.integration]


@pytest.fixture(scope="module")
def sched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessScheduler]:
    with InProcessScheduler(Path(tmp_path_factory.mktemp("identity")), tick_s=0.2) as s:
        yield s


def job(sched: InProcessScheduler, job_id: str) -> JobRecord:
    rec = sched.on_loop(lambda app: app.loop.get(job_id))
    assert rec is not None
    return rec


async def stream_status(agent: WireAgent) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        while True:
            await agent.recv(10)
    return err.value.code()


def test_an_agent_token_is_bound_to_its_agent_id(sched: InProcessScheduler) -> None:
    token_a = issue_agent_token(sched.journal_path, "bound-a")

    async def go() -> None:
        as_b = WireAgent(sched.address, token_a, "bound-b")
        await as_b.connect()
        assert await stream_status(as_b) == grpc.StatusCode.PERMISSION_DENIED
        await as_b.close()
        forged = WireAgent(sched.address, "hsa_" + "A" * 32, "bound-a")
        await forged.connect()
        assert await stream_status(forged) == grpc.StatusCode.UNAUTHENTICATED
        await forged.close()
        # A customer's API key is not an agent credential.
        as_customer = WireAgent(sched.address, sched.credentials.api_key, "bound-a")
        await as_customer.connect()
        assert await stream_status(as_customer) == grpc.StatusCode.UNAUTHENTICATED
        await as_customer.close()
        as_a = WireAgent(sched.address, token_a, "bound-a")
        await as_a.connect()
        welcome = await as_a.recv_kind("welcome")
        assert welcome.welcome.agent_id == "bound-a"
        await as_a.close()

    run(go())
    assert sched.on_loop(lambda app: "bound-b" not in app.loop.core.nodes)


def test_a_refused_agent_is_told_why_every_time(sched: InProcessScheduler) -> None:
    """An agent writes its hello as it opens the stream; refused on its credential while that
    write is out, it was told INTERNAL (the transport's reset) about once in 150 tries, and an
    agent told INTERNAL retries a credential it should give up on."""

    async def go() -> collections.Counter[grpc.StatusCode]:
        codes: collections.Counter[grpc.StatusCode] = collections.Counter()
        for _ in range(300):
            forged = WireAgent(sched.address, "hsa_" + "B" * 32, "bound-a")
            await forged.connect()
            codes[await stream_status(forged)] += 1
            await forged.close()
        return codes

    assert run(go()) == {grpc.StatusCode.UNAUTHENTICATED: 300}


def test_an_agent_cannot_start_report_or_adopt_a_job_that_is_not_its_own(
    sched: InProcessScheduler,
) -> None:
    owner_token = issue_agent_token(sched.journal_path, "owner", region="europe")
    thief_token = issue_agent_token(sched.journal_path, "thief", region="europe")
    creds = sched.credentials

    async def go() -> tuple[str, str]:
        owner = WireAgent(sched.address, owner_token, "owner", region="europe")
        channel, stub = customer_stub(sched.address)
        md = bearer(creds.api_key)
        try:
            await owner.connect()
            await owner.recv_kind("welcome")
            owner.beat()
            held = (await stub.SubmitJob(
                customer_pb2.SubmitJobRequest(spec=embed_spec("owned", regions=("europe",))),
                metadata=md,
            )).job.id
            assign = await owner.recv_kind("assign")
            assert assign.assign.ref.job_id == held
            owner.started(held, 1)
            # A job nobody holds yet: parked in a region without agents.
            parked = (await stub.SubmitJob(
                customer_pb2.SubmitJobRequest(
                    spec=embed_spec("parked", regions=("south_america",))
                ),
                metadata=md,
            )).job.id
            before = {j: job(sched, j) for j in (held, parked)}

            # The thief says it already runs the owner's job: it is told to cancel, not adopted.
            thief = WireAgent(sched.address, thief_token, "thief", region="europe",
                              running=((held, 1),))
            await thief.connect()
            await thief.recv_kind("welcome")
            cancel = await thief.recv_kind("cancel")
            assert cancel.cancel.ref.job_id == held
            for target, attempt in ((held, 1), (held, 2), (parked, 0), (parked, 1)):
                thief.started(target, attempt)
                thief.send(agent_pb2.AgentMessage(progress=agent_pb2.JobProgress(
                    ref=agent_pb2.AttemptRef(job_id=target, attempt=attempt),
                    text_delta="injected", tokens_so_far=1,
                )))
                thief.outcome(target, attempt, text="forged result")
                ack = await thief.recv_kind("ack")
                assert not ack.ack.accepted, ack.ack.reason
                assert ack.ack.ref.job_id == target
            thief.heartbeat()  # lists the jobs it "started": changes nothing
            await asyncio.sleep(0.5)
            after = {j: job(sched, j) for j in (held, parked)}
            for j in (held, parked):
                assert after[j].state == before[j].state
                assert after[j].node_id == before[j].node_id
                assert after[j].attempt == before[j].attempt
                assert not after[j].result_blob
            # The owner still finishes its job, and its result is the one kept.
            owner.outcome(held, 1, text="the owner's result")
            assert (await owner.recv_kind("ack")).ack.accepted
            final = await stub.GetJob(customer_pb2.GetJobRequest(job_id=held), metadata=md)
            await thief.close()
            return held, final.result.text
        finally:
            await owner.close()
            await channel.close()

    held, text = run(go())
    assert text == "the owner's result"
    rows = outcome_rows(sched.journal_path, [held])[held]
    assert rows == [{"node": "owner", "attempt": 1}]
    counts = account("agent identity", sched.journal_path, {"held": held})
    assert (counts.lost, counts.duplicated) == (0, 0)


def test_a_tenant_cannot_read_watch_cancel_or_list_another_tenants_jobs(
    sched: InProcessScheduler,
) -> None:
    other = issue_key(sched.journal_path, "intruder")

    async def go() -> None:
        channel, stub = customer_stub(sched.address)
        owner_md, other_md = bearer(sched.credentials.api_key), bearer(other)
        try:
            mine = (await stub.SubmitJob(
                customer_pb2.SubmitJobRequest(
                    spec=embed_spec("private", regions=("south_america",)),
                    idempotency_key="private-1",
                ),
                metadata=owner_md,
            )).job
            for call in (
                stub.GetJob(customer_pb2.GetJobRequest(job_id=mine.id), metadata=other_md),
                stub.CancelJob(customer_pb2.CancelJobRequest(job_id=mine.id), metadata=other_md),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await call
                assert err.value.code() == grpc.StatusCode.NOT_FOUND
                assert mine.id in (err.value.details() or "")  # same words as an unknown id
            with pytest.raises(grpc.aio.AioRpcError) as err:
                async for _ in stub.WatchJob(
                    customer_pb2.WatchJobRequest(job_id=mine.id), metadata=other_md
                ):
                    pass
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            listed = await stub.ListJobs(
                customer_pb2.ListJobsRequest(page_size=1000), metadata=other_md
            )
            assert mine.id not in {j.id for j in listed.jobs}
            # Paging from the owner's job id shows the intruder only its own jobs.
            paged = await stub.ListJobs(
                customer_pb2.ListJobsRequest(page_size=1000, page_token=mine.id),
                metadata=other_md,
            )
            assert all(j.tenant == "intruder" for j in paged.jobs)
            # The owner's idempotency key is the intruder's own, separate namespace.
            theirs = await stub.SubmitJob(
                customer_pb2.SubmitJobRequest(spec=embed_spec("other body"),
                                              idempotency_key="private-1"),
                metadata=other_md,
            )
            assert not theirs.deduplicated and theirs.job.id != mine.id
            still = await stub.GetJob(customer_pb2.GetJobRequest(job_id=mine.id),
                                      metadata=owner_md)
            assert still.state == jobs_pb2.JOB_STATE_QUEUED  # the cancel did nothing
        finally:
            await channel.close()

    run(go())


def test_keys_and_tokens_are_stored_only_as_hashes(sched: InProcessScheduler) -> None:
    creds = sched.credentials
    secrets_ = [creds.api_key, creds.admin_key, creds.agent_token,
                issue_key(sched.journal_path, "hashed-check")]
    raw = b""
    for path in sched.journal_path.parent.glob("journal.db*"):  # the db, its WAL and shm
        raw += path.read_bytes()
    for secret in secrets_:
        assert secret.encode() not in raw
        # The random part alone (after hsk_<key id>_ or hsa_) is not stored either.
        random_part = secret.split("_", 2)[2] if secret.startswith("hsk_") else secret[4:]
        assert len(random_part) >= 24 and random_part.encode() not in raw
    journal = SqliteJournal(sched.journal_path)
    try:
        row = journal.get_api_key(key_id_of(creds.api_key))
        assert row is not None
        assert row.key_hash == hashlib.sha256(creds.api_key.encode()).hexdigest()
        assert journal.find_agent_credential(
            hashlib.sha256(creds.agent_token.encode()).hexdigest())
    finally:
        journal.close()


def test_api_keys_are_compared_in_constant_time_and_revocation_applies_at_once(
    sched: InProcessScheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The comparison goes through hmac.compare_digest on the hashes (its time does not depend on
    how much of a guess is right); a wrong secret with a real key id is refused."""
    key = issue_key(sched.journal_path, "timing")
    key_id = key_id_of(key)
    compared: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    journal = SqliteJournal(sched.journal_path)
    try:
        auth = Authenticator(journal)
        guess = f"hsk_{key_id}_{'x' * 32}"
        with pytest.raises(AuthError):
            auth.customer([("authorization", f"Bearer {guess}")])
        stored = hashlib.sha256(key.encode()).hexdigest()
        assert compared == [(stored, hashlib.sha256(guess.encode()).hexdigest())]
        assert auth.customer([("authorization", f"Bearer {key}")]).tenant == "timing"
        journal.revoke_api_key(key_id)
    finally:
        journal.close()

    async def go() -> grpc.StatusCode:
        channel, stub = customer_stub(sched.address)
        try:
            await stub.ListModels(customer_pb2.ListModelsRequest(), metadata=bearer(key))
        except grpc.aio.AioRpcError as err:
            return err.code()
        finally:
            await channel.close()
        return grpc.StatusCode.OK

    assert run(go()) == grpc.StatusCode.UNAUTHENTICATED

