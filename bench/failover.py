"""Failover: SIGKILL the Ray worker node that hosts the leading scheduler, under load.

    python bench/failover.py [--jobs 80] [--rate 20] [--kills 2] [--smoke]

Starts what a multi-node deployment runs, on this machine (tests/chaos/multinode.py): a
PostgreSQL server, a Ray head and one Ray worker node per scheduler (on loopback), two
`hashserve scheduler` instances sharing the journal (one leads, one stands by), and an agent
that knows both addresses. A customer submits embeddings at `--rate` a second, each with an
idempotency key and retried until acknowledged, as the SDK's users would. After a fifth of them
the leader's worker node is SIGKILLed (its raylet and workers). At once a probe submits one
job, retrying, and waits for its result:

- `takeover_s`: from the kill to the probe's job accepted *and* completed by the new leader.
  Target: 10 s or less (the lease lasts 2 s here; the standby polls it 4 times a lease).
  `lease_taken_s` beside it: from the kill to the new epoch in the journal.
- `lost` and `duplicated`: from the journal, as `tests/chaos/ledger.py` counts them, over every
  acknowledged job. Target: 0 and 0.

With `--kills 2` the killed node comes back (its scheduler returns as the standby) and the
new leader's node is killed in turn. The last line is JSON.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if str(Path(__file__).resolve().parent) in sys.path:
    sys.path.remove(str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import finish, parser, percentile, table
from hashserve.client import Client
from hashserve.v1 import customer_pb2, jobs_pb2
from tests.chaos.ledger import account, wait_until_final
from tests.chaos.multinode import (
    EMBED,
    MultiNodeCluster,
    embed_request,
    multinode_cluster,
    submit_until_acked,
)
from tests.integration.postgres_server import PostgresServer, unavailable_reason


async def probe(c: MultiNodeCluster, name: str) -> float:
    """Submit one job until acknowledged, wait for its result; the time it all took."""
    started = time.monotonic()
    req = customer_pb2.SubmitJobRequest(
        spec=jobs_pb2.JobSpec(model=EMBED, tier=jobs_pb2.TIER_INTERACTIVE,
                              embed=jobs_pb2.EmbedInput(texts=[f"probe {name}"])),
        idempotency_key=f"probe-{name}",
    )
    async with Client(c.addresses, c.api_key) as client:
        job_id = await submit_until_acked(client, req)
        while True:
            try:
                job = await client.wait(job_id, timeout_s=30)
                if job.state == jobs_pb2.JOB_STATE_SUCCEEDED:
                    return time.monotonic() - started
                raise RuntimeError(f"probe job {job_id} ended {job.state}: {job.error}")
            except Exception as err:  # a watch cut by the failover: watch again
                if "ended" in str(err):
                    raise
                await asyncio.sleep(0.1)


def new_epoch_after(c: MultiNodeCluster, epoch: int) -> float:
    """When (monotonic) the journal's lease got an epoch above `epoch`."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if c.lease()[1] > epoch:
            return time.monotonic()
        time.sleep(0.02)
    return float("nan")


def run(c: MultiNodeCluster, jobs: int, rate: float, kills: int) -> dict[str, Any]:
    acked: dict[str, str] = {}
    takeovers: list[float] = []
    lease_taken: list[float] = []
    kill_at = sorted({max(1, jobs * (k + 1) // (kills + 2)) for k in range(kills)})
    killed: list[str] = []

    async def go() -> None:
        async with Client(c.addresses, c.api_key) as client:
            tasks = []
            for i in range(jobs):
                tasks.append(asyncio.create_task(
                    submit_until_acked(client, embed_request(i, "failover"))))
                if i in kill_at:
                    if killed:  # the node killed before is back: its scheduler stands by
                        await asyncio.to_thread(c.restart_node, killed[-1])
                    leader, epoch, _ = await asyncio.to_thread(c.wait_leader, 60)
                    print(f"killing the worker node of leader {leader} (epoch {epoch})",
                          flush=True)
                    killed_at = time.monotonic()
                    await asyncio.to_thread(c.kill_node, leader)
                    killed.append(leader)
                    leased = asyncio.create_task(asyncio.to_thread(new_epoch_after, c, epoch))
                    takeover_s = await probe(c, f"{len(killed)}")
                    lease_s = (await leased) - killed_at
                    takeovers.append(takeover_s)
                    lease_taken.append(lease_s)
                    print(f"  lease taken after {lease_s:.2f} s; a job accepted and completed "
                          f"after {takeover_s:.2f} s", flush=True)
                await asyncio.sleep(1.0 / rate)
            for i, job_id in enumerate(await asyncio.gather(*tasks)):
                acked[f"failover-{i}"] = job_id

    asyncio.run(go())
    wait_until_final(c.journal_url, list(acked.values()), 300)
    counts = account("bench failover", c.journal_url, acked, tenant="acme")
    return {"takeovers_s": takeovers, "lease_taken_s": lease_taken, "acked": len(acked),
            "completed": counts.completed, "lost": counts.lost, "duplicated": counts.duplicated}


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--jobs", type=int, default=80)
    p.add_argument("--rate", type=float, default=20.0)
    p.add_argument("--kills", type=int, default=2)
    args = p.parse_args()
    if args.smoke:
        args.jobs, args.kills = 20, 1
    reason = unavailable_reason()
    if reason is not None:
        raise SystemExit(f"bench/failover.py needs PostgreSQL: {reason}")
    with PostgresServer() as pg, tempfile.TemporaryDirectory(prefix="hs-failover-") as tmp:
        url = pg.create_database("failover")
        with multinode_cluster(Path(tmp), url) as cluster:
            try:
                out = run(cluster, args.jobs, args.rate, args.kills)
            except BaseException:
                print(cluster.tail(), file=sys.stderr)
                raise
    takeovers = out["takeovers_s"]
    worst = max(takeovers) if takeovers else float("nan")
    print(table([[f"kill {i + 1}", lease, t]
                 for i, (lease, t) in enumerate(zip(out["lease_taken_s"], takeovers,
                                                    strict=True))],
                ["event", "lease taken s", "takeover s"]))
    print(f"acknowledged {out['acked']}, completed {out['completed']}, lost {out['lost']}, "
          f"duplicated {out['duplicated']}; worst takeover {worst:.2f} s (target <= 10)")
    finish("failover", args, {
        "takeover_s": round(worst, 3),
        "takeover_p50_s": round(percentile(takeovers, 0.5), 3) if takeovers else None,
        "takeovers_s": [round(t, 3) for t in takeovers],
        "lease_taken_s": [round(t, 3) for t in out["lease_taken_s"]],
        "lost": out["lost"],
        "duplicated": out["duplicated"],
        "acknowledged": out["acked"],
        "completed": out["completed"],
        "jobs": args.jobs, "rate_per_s": args.rate, "kills": args.kills,
    })


if __name__ == "__main__":
    main()
