"""Shared helpers for integration tests: a real local hashserve (Ray, scheduler actor, agent
processes) and a real gRPC client."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from hashserve.client import Client
from hashserve.local import AgentPlan, LocalCluster, RestartPolicy
from scheduler.api.auth import Authenticator
from scheduler.journal.sqlite import SqliteJournal

T = TypeVar("T")
EMBED = "all-minilm-l6-v2"
GEN = "smollm2-135m-instruct"


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


@contextmanager
def local_cluster(
    workdir: Path,
    agents: list[AgentPlan],
    restart: RestartPolicy | None = None,
    native_front: bool = False,
    **settings: object,
) -> Iterator[LocalCluster]:
    """A local cluster whose agent supervisor restarts agents that die (as systemd would);
    with `native_front`, customers' calls go through the native front, as `hashserve up`'s."""
    cluster = LocalCluster(
        workdir=workdir, agents=agents, settings_overrides=dict(settings),
        restart=restart or RestartPolicy(), native_front=native_front,
    )
    try:
        cluster.start_scheduler()
        cluster.start_agents()
        wait_for_agents(cluster, len(agents))
        yield cluster
    finally:
        cluster.stop()


def client(cluster: LocalCluster, api_key: str | None = None) -> Client:
    assert cluster.credentials is not None
    return Client(cluster.address, api_key or cluster.credentials.api_key)


def wait_for_agents(cluster: LocalCluster, n: int, timeout_s: float = 180.0) -> None:
    async def go() -> None:
        async with client(cluster) as c:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                try:
                    models = await c.models()
                    if all(m.nodes_serving >= n for m in models.models):
                        return
                except Exception:
                    pass
                await asyncio.sleep(0.3)
            raise TimeoutError(f"{n} agents did not connect within {timeout_s} s")

    run(go())


def until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")


def new_tenant_key(cluster: LocalCluster, tenant: str) -> str:
    """Issue a key for another tenant straight into the running scheduler's journal (WAL lets
    two connections share it); the scheduler reads keys from the journal on every call."""
    journal = SqliteJournal(cluster.journal_path)
    try:
        auth = Authenticator(journal)
        auth.create_tenant(tenant)
        return auth.issue_api_key(tenant)[1]
    finally:
        journal.close()


def journal_rows(cluster: LocalCluster, sql: str, args: tuple[object, ...] = ()) -> list[tuple]:
    db = sqlite3.connect(cluster.journal_path)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def with_client(
    cluster: LocalCluster, fn: Callable[[Client], Awaitable[T]], key: str | None = None
) -> T:
    async def go() -> T:
        async with client(cluster, key) as c:
            return await fn(c)

    return run(go())
