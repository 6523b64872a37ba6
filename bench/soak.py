"""Soak: a steady load held for minutes while the scheduler and agents are killed again and again.

    python bench/soak.py --minutes N [--rate 10] [--kill-every 30] [--queue 0] [--smoke]

Starts a real local hashserve (Ray, the scheduler actor, agent processes) and a customer that
submits `--rate` jobs a second (mostly one-sentence embeddings, some long batches, some short
generations when llama-cpp-python is installed), each with an idempotency key and retried until
acknowledged. Every `--kill-every` seconds it SIGKILLs, in turn, the scheduler actor's process
(Ray restarts it; the pid is the supervisor's) and an agent holding running work (restarted a
second later, as systemd would). With `--queue N` it first parks N flex jobs that no agent can run
(a region with no agents) and measures the scheduler's memory before and after: the cost of a
long queue, per job, and the recovery of that queue after each kill.

At the end it waits for every acknowledged job and prints, from the journal: jobs acknowledged,
completed, lost (must be 0) and duplicated (answered twice or made twice by a key; must be 0),
latency percentiles from the customer's first try to the job's end, and the peak resident memory
(RSS from /proc) of the scheduler actor and of the agents. The last line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

# bench/http.py's name would hide the standard library's `http` from every import after this
# if this folder stayed first on the path (as it is for a script): it goes, the repository comes.
if str(Path(__file__).resolve().parent) in sys.path:
    sys.path.remove(str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hashserve.local import AgentPlan, LocalCluster
from hashserve.v1 import customer_pb2, jobs_pb2
from scheduler.api.auth import Authenticator
from scheduler.journal.sqlite import SqliteJournal
from tests.chaos.harness import (
    EMBED,
    SteadyLoad,
    bearer,
    customer_stub,
    gen_spec,
    llm_installed,
    wait_serving,
)
from tests.chaos.ledger import account, wait_until_final

AGENTS = [
    AgentPlan("soak-na-1", "tx-odessa", "north_america"),
    AgentPlan("soak-na-2", "ny-massena", "north_america"),
    AgentPlan("soak-eu-1", "de-leipzig", "europe"),
]
LONG_TEXTS = ["hourly settlement of curtailed load at the wind farm " * 20] * 8
PARK_REGION = "south_america"  # no agent there: parked jobs stay queued


def rss_bytes(pid: int) -> int:
    """Resident set size of a live process, from /proc (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, ValueError):
        pass
    return 0


class MemoryWatch:
    """Samples the RSS of the scheduler actor (whatever its pid now) and each agent."""

    def __init__(self, cluster: LocalCluster, interval_s: float = 0.5) -> None:
        self.cluster = cluster
        self.interval_s = interval_s
        self.peak_scheduler = 0
        self.peak_agent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def scheduler_rss(self) -> int:
        return rss_bytes(int(self.cluster.supervisor.info["pid"]))  # type: ignore[attr-defined]

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_scheduler = max(self.peak_scheduler, self.scheduler_rss())
            for proc in list(self.cluster.procs.values()):
                self.peak_agent = max(self.peak_agent, rss_bytes(proc.pid))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)] if ordered else float("nan")


def make_spec(with_llm: bool) -> Any:
    tiers = (jobs_pb2.TIER_INTERACTIVE, jobs_pb2.TIER_STANDARD, jobs_pb2.TIER_STANDARD)

    def make(i: int) -> jobs_pb2.JobSpec:
        if i % 10 == 5:
            return jobs_pb2.JobSpec(
                model=EMBED, embed=jobs_pb2.EmbedInput(texts=[f"{i}", *LONG_TEXTS]),
                tier=jobs_pb2.TIER_STANDARD,
            )
        if with_llm and i % 10 == 8:
            return gen_spec(f"Name one use of waste heat, number {i}.", 16)
        return jobs_pb2.JobSpec(
            model=EMBED, embed=jobs_pb2.EmbedInput(texts=[f"soak text {i}"]), tier=tiers[i % 3]
        )

    return make


def running_nodes(journal_path: Path) -> list[str]:
    db = sqlite3.connect(f"file:{journal_path}?mode=ro", uri=True, timeout=10)
    try:
        rows = db.execute(
            "SELECT DISTINCT node_id FROM jobs WHERE state IN ('running', 'assigned')"
        ).fetchall()
    finally:
        db.close()
    return [str(r[0]) for r in rows if r[0]]


async def park(cluster: LocalCluster, key: str, n: int) -> list[str]:
    """Submit n flex jobs nobody can run, in batches of 256."""
    channel, stub = customer_stub(cluster.address)
    ids: list[str] = []
    try:
        for start in range(0, n, 256):
            batch = customer_pb2.SubmitJobsRequest(
                jobs=[
                    customer_pb2.SubmitJobRequest(
                        spec=jobs_pb2.JobSpec(
                            model=EMBED,
                            embed=jobs_pb2.EmbedInput(texts=[f"parked job number {i}"]),
                            tier=jobs_pb2.TIER_FLEX, allowed_regions=[PARK_REGION],
                        ),
                        idempotency_key=f"park-{i}",
                    )
                    for i in range(start, min(start + 256, n))
                ]
            )
            resp = await stub.SubmitJobs(batch, metadata=bearer(key), timeout=60)
            ids += [r.job.id for r in resp.jobs]
    finally:
        await channel.close()
    return ids


async def cancel_all(cluster: LocalCluster, key: str, ids: list[str]) -> None:
    channel, stub = customer_stub(cluster.address)
    try:
        for start in range(0, len(ids), 200):
            await asyncio.gather(*(
                stub.CancelJob(customer_pb2.CancelJobRequest(job_id=j), metadata=bearer(key))
                for j in ids[start : start + 200]
            ))
    finally:
        await channel.close()


async def soak(
    cluster: LocalCluster, key: str, args: argparse.Namespace, memory: MemoryWatch
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    parked: list[str] = []
    if args.queue:
        await asyncio.sleep(2.0)
        before = memory.scheduler_rss()
        t0 = time.monotonic()
        parked = await park(cluster, key, args.queue)
        result["park_s"] = round(time.monotonic() - t0, 1)
        await asyncio.sleep(3.0)
        after = memory.scheduler_rss()
        result["queue"] = {
            "jobs": len(parked),
            "scheduler_rss_before_mib": round(before / 2**20, 1),
            "scheduler_rss_after_mib": round(after / 2**20, 1),
            "kib_per_queued_job": round((after - before) / 1024 / max(len(parked), 1), 2),
        }
        print(f"parked {len(parked)} jobs in {result['park_s']} s: scheduler RSS "
              f"{before / 2**20:.0f} -> {after / 2**20:.0f} MiB")

    load = SteadyLoad(cluster.address, key, make_spec(llm_installed()), args.rate, "soak")
    kills: list[dict[str, Any]] = []
    plans = {a.agent_id: a for a in AGENTS}
    rng = random.Random(7)

    async def killer(stop: asyncio.Event) -> None:
        try:
            deadline = time.monotonic() + args.minutes * 60
            turn = 0
            while args.kill_every > 0 and time.monotonic() + args.kill_every < deadline:
                await asyncio.sleep(args.kill_every)
                if turn % 2 == 0:
                    pid = int(cluster.supervisor.info["pid"])  # type: ignore[attr-defined]
                    t0 = time.monotonic()
                    os.kill(pid, signal.SIGKILL)
                    while int(cluster.supervisor.info["pid"]) == pid:  # type: ignore[attr-defined]
                        await asyncio.sleep(0.1)
                    await wait_serving(cluster.address, 120)
                    kills.append({"what": "scheduler", "pid": pid,
                                  "down_s": round(time.monotonic() - t0, 1)})
                else:
                    busy = [n for n in running_nodes(cluster.journal_path) if n in plans]
                    node = rng.choice(busy or sorted(plans))
                    victim = cluster.procs[node]
                    victim.send_signal(signal.SIGKILL)
                    kills.append({"what": "agent", "node": node, "was_busy": bool(busy)})
                    # The local cluster's supervisor restarts it, as systemd would.
                    await asyncio.to_thread(cluster.wait_restarted, node, victim.pid, 60.0)
                print(f"  kill {len(kills)}: {kills[-1]} ({len(load.acked)} acknowledged so far)")
                turn += 1
            if args.kill_every <= 0:  # no kills: hold the load for the whole time
                await asyncio.sleep(max(deadline - time.monotonic(), 0))
        finally:
            stop.set()

    stop = asyncio.Event()
    t_load = time.monotonic()
    await asyncio.gather(load.run(args.minutes * 60, stop), killer(stop))
    result["load_s"] = round(time.monotonic() - t_load, 1)
    result["kills"] = kills
    result["load"] = load
    result["parked"] = parked
    return result


def latencies(journal_path: Path, load: SteadyLoad) -> dict[str, dict[str, float]]:
    db = sqlite3.connect(f"file:{journal_path}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT idempotency_key, tier, finished_s FROM jobs WHERE idempotency_key LIKE "
            "'soak-%' AND state='succeeded'"
        ).fetchall()
    finally:
        db.close()
    by_tier: dict[str, list[float]] = {}
    for key, tier, finished_s in rows:
        if key in load.first_try_s:
            by_tier.setdefault(tier, []).append(finished_s - load.first_try_s[key])
            by_tier.setdefault("all", []).append(finished_s - load.first_try_s[key])
    return {
        tier: {
            "n": len(v), "p50_s": round(pct(v, 0.5), 3), "p90_s": round(pct(v, 0.9), 3),
            "p99_s": round(pct(v, 0.99), 3), "max_s": round(max(v), 3),
        }
        for tier, v in sorted(by_tier.items())
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=10.0, help="submits per second")
    parser.add_argument(
        "--kill-every", type=float, default=30.0, help="seconds between kills; 0: none"
    )
    parser.add_argument("--queue", type=int, default=0, help="flex jobs parked before the load")
    parser.add_argument("--smoke", action="store_true", help="a half-minute run")
    args = parser.parse_args()
    if args.smoke:
        args.minutes, args.kill_every, args.rate = 0.5, 8.0, 8.0

    workdir = Path(tempfile.mkdtemp(prefix="hashserve-soak-"))
    cluster = LocalCluster(
        workdir=workdir, agents=AGENTS,
        settings_overrides={"lease_s": 5.0, "disconnect_grace_s": 2.0,
                            "recovery_grace_s": 8.0, "tick_s": 0.2},
    )
    t0 = time.monotonic()
    cluster.start_scheduler()
    # The soak's own tenant: room for the parked queue and the load.
    journal = SqliteJournal(cluster.journal_path)
    try:
        auth = Authenticator(journal)
        auth.create_tenant("soak", max_queued_jobs=1_000_000, rate=100_000.0)
        key = auth.issue_api_key("soak")[1]
    finally:
        journal.close()
    cluster.start_agents()
    from tests.integration.cluster import wait_for_agents

    wait_for_agents(cluster, len(AGENTS))
    print(f"cluster up in {time.monotonic() - t0:.0f} s ({workdir}); soaking "
          f"{args.minutes:g} min at {args.rate:g}/s, a kill every {args.kill_every:g} s")
    memory = MemoryWatch(cluster)
    memory.start()
    try:
        result = asyncio.run(soak(cluster, key, args, memory))
        load: SteadyLoad = result.pop("load")
        parked: list[str] = result.pop("parked")
        t_drain = time.monotonic()
        wait_until_final(cluster.journal_path, list(load.acked.values()), 300)
        drain_s = time.monotonic() - t_drain
        if parked:
            asyncio.run(cancel_all(cluster, key, parked))
    finally:
        memory.stop()
        cluster.stop()
    counts = account("soak", cluster.journal_path, load.acked, tenant="soak")
    lat = latencies(cluster.journal_path, load)
    print(f"\nkills: {sum(k['what'] == 'scheduler' for k in result['kills'])} scheduler, "
          f"{sum(k['what'] == 'agent' for k in result['kills'])} agent; "
          f"scheduler down {[k['down_s'] for k in result['kills'] if 'down_s' in k]} s")
    print(f"{'tier':<12} {'n':>6} {'p50 s':>8} {'p90 s':>8} {'p99 s':>8} {'max s':>8}")
    for tier, row in lat.items():
        print(f"{tier:<12} {row['n']:>6} {row['p50_s']:>8.3f} {row['p90_s']:>8.3f} "
              f"{row['p99_s']:>8.3f} {row['max_s']:>8.3f}")
    print(f"peak RSS: scheduler actor {memory.peak_scheduler / 2**20:.0f} MiB, "
          f"largest agent {memory.peak_agent / 2**20:.0f} MiB; drained in {drain_s:.0f} s")
    print(counts.line())
    summary = {
        "minutes": args.minutes,
        "rate_per_s": args.rate,
        **counts.as_json(),
        "submit_retries": load.retries,
        "refused": load.refused,
        "latency": lat,
        "peak_rss_mib": {
            "scheduler": round(memory.peak_scheduler / 2**20, 1),
            "agent_max": round(memory.peak_agent / 2**20, 1),
        },
        **result,
    }
    print(json.dumps(summary))
    if counts.lost or counts.duplicated:
        sys.exit(1)


if __name__ == "__main__":
    main()
