"""Failover between Ray nodes: a real multi-node Ray cluster on this machine (a head and one
worker node per scheduler, on loopback), two schedulers sharing a PostgreSQL journal, an agent
that knows both addresses, and customers that retry with their idempotency keys.

1. Under load, the worker node that hosts the leader is SIGKILLed (its raylet and workers): the
   standby takes the lease and serves; every acknowledged job succeeds exactly once.
2. The leader is SIGSTOPped: Ray does not notice, the standby takes over when the lease lapses;
   then the old leader is SIGCONTed. It must change nothing: no journal row of its epoch after
   the takeover, no job lost or answered twice, and it steps down (exits; Ray starts it again
   as a standby).
3. PostgreSQL goes away mid-load and comes back: customers see UNAVAILABLE and retry; the
   leader, which cannot renew its lease or write, steps down; whichever scheduler takes the
   lease once the database is back recovers every job from it. Nothing accepted is lost.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from hashserve.client import Client, embed_spec
from hashserve.v1 import customer_pb2
from tests.chaos.ledger import account, wait_until_final
from tests.chaos.multinode import (
    EMBED,
    MultiNodeCluster,
    embed_request,
    multinode_cluster,
    submit_until_acked,
)
from tests.integration.postgres_server import PostgresServer, unavailable_reason

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="module")
def cluster(pg: PostgresServer,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[MultiNodeCluster]:
    url = pg.create_database("failover")
    workdir = Path(tmp_path_factory.mktemp("failover"))
    with multinode_cluster(workdir, url) as c:
        yield c


def run_load(c: MultiNodeCluster, n: int, prefix: str, at: int,
             action: object) -> dict[str, str]:
    """Submit `n` jobs, one every 50 ms, each retried until acknowledged; call `action()` once
    after the `at`-th. Returns idempotency key -> job id."""
    acked: dict[str, str] = {}

    async def go() -> None:
        async with Client(c.addresses, c.api_key) as client:
            tasks = []
            for i in range(n):
                req = embed_request(i, prefix)
                tasks.append(asyncio.create_task(submit_until_acked(client, req)))
                if i == at:
                    await asyncio.to_thread(action)  # type: ignore[arg-type]
                await asyncio.sleep(0.05)
            for i, job_id in enumerate(await asyncio.gather(*tasks)):
                acked[f"{prefix}-{i}"] = job_id

    asyncio.run(go())
    return acked


def test_killing_the_leaders_node_under_load_loses_and_repeats_nothing(
    cluster: MultiNodeCluster,
) -> None:
    leader, epoch, _ = cluster.wait_leader(60)
    acked = run_load(cluster, 60, "kill", 20, lambda: cluster.kill_node(leader))
    new_leader, new_epoch, _ = cluster.wait_leader(60, other_than=epoch)
    assert new_leader != leader and new_epoch > epoch
    wait_until_final(cluster.journal_url, list(acked.values()), 180)
    counts = account("failover: leader's node killed", cluster.journal_url, acked,
                     tenant="acme")
    assert (counts.lost, counts.duplicated) == (0, 0), counts
    assert counts.completed == 60
    # The node comes back; its scheduler (Ray restarts the actor there) stands by.
    cluster.restart_node(leader)


class WatchAtLeader:
    """A customer watching, at the leader's own port, a job no agent can run (no agent is in
    its region): the watch stays open until the leader stops serving it."""

    def __init__(self, port: int, api_key: str) -> None:
        self.port, self.api_key = port, api_key
        self.opened = threading.Event()
        self.job_id = ""
        self.ended: grpc.StatusCode | None = None
        self.details = ""
        self.thread = threading.Thread(target=lambda: asyncio.run(self._watch()), daemon=True)
        self.thread.start()
        if not self.opened.wait(30):
            raise TimeoutError(f"no watch opened at port {port}")

    async def _watch(self) -> None:
        async with Client(f"127.0.0.1:{self.port}", self.api_key) as c:
            reply = await c.submit(embed_spec(EMBED, ["nobody runs this"], regions=["europe"]),
                                   idempotency_key="pause-watch")
            self.job_id = reply.job.id
            call = c.stub.WatchJob(customer_pb2.WatchJobRequest(job_id=self.job_id),
                                   metadata=c.metadata, timeout=300)
            await call.read()  # the job as it stands: subscribed
            self.opened.set()
            try:
                while await call.read() is not grpc.aio.EOF:
                    pass
                self.ended = grpc.StatusCode.OK
            except grpc.aio.AioRpcError as err:
                self.ended, self.details = err.code(), err.details() or ""


def test_a_paused_leader_that_wakes_changes_nothing(cluster: MultiNodeCluster) -> None:
    import psycopg

    leader, epoch, pid = cluster.wait_leader(60)
    watch = WatchAtLeader(next(s.port for s in cluster.schedulers if s.name == leader),
                          cluster.api_key)
    paused_at = time.time()

    def pause() -> None:
        os.kill(pid, signal.SIGSTOP)

    try:
        acked = run_load(cluster, 40, "pause", 10, pause)
        new_leader, new_epoch, _ = cluster.wait_leader(60, other_than=epoch)
        assert new_leader != leader and new_epoch > epoch
    finally:
        os.kill(pid, signal.SIGCONT)
    woke_at = time.time()
    # Woken, the old leader finds its lease gone and exits; Ray brings it back as a standby.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"the old leader (pid {pid}) did not step down:\n{cluster.tail()}")
    # Its customer's watch was told why it ended and to watch again (the job goes on).
    watch.thread.join(30)
    assert watch.ended == grpc.StatusCode.UNAVAILABLE, (watch.ended, watch.details)
    assert "stepped down" in watch.details

    async def cancel_parked() -> None:
        async with Client(cluster.addresses, cluster.api_key) as c:
            await c.cancel(watch.job_id)

    asyncio.run(cancel_parked())
    wait_until_final(cluster.journal_url, list(acked.values()), 180)
    counts = account("failover: leader paused and woken", cluster.journal_url, acked,
                     tenant="acme")
    assert (counts.lost, counts.duplicated) == (0, 0), counts
    with psycopg.connect(cluster.journal_url, autocommit=True) as conn:
        late = conn.execute(
            "SELECT count(*) FROM decisions WHERE epoch = %s AND t_s > %s",
            (epoch, woke_at)).fetchone()
        assert late is not None and late[0] == 0  # the old epoch wrote nothing once awake
        assert paused_at < woke_at
    assert cluster.lease()[1] == new_epoch  # the new leader still leads


def test_the_journal_going_away_mid_load_loses_nothing(
    cluster: MultiNodeCluster, pg: PostgresServer
) -> None:
    _, epoch, _ = cluster.wait_leader(60)
    away_s = 6.0

    def outage() -> None:
        pg.stop()
        time.sleep(away_s)
        pg.relaunch()

    away = threading.Thread(target=outage, name="journal-outage")
    try:
        acked = run_load(cluster, 40, "dbaway", 10, away.start)  # submits go on during it
    finally:
        if away.is_alive():
            away.join()  # the database comes back before the fixtures tear it down
    _, new_epoch, _ = cluster.wait_leader(120, other_than=epoch)
    assert new_epoch > epoch  # the leader of the outage stepped down; a new epoch leads
    wait_until_final(cluster.journal_url, list(acked.values()), 180)
    counts = account("failover: journal away for 6 s", cluster.journal_url, acked,
                     tenant="acme")
    assert (counts.lost, counts.duplicated) == (0, 0), counts
    assert counts.completed == 40
