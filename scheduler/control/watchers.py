"""Customers watching jobs: one bounded queue per watch, fed by the control loop."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from hashserve.v1 import customer_pb2

# A watcher that cannot keep up loses token deltas, never state changes (those are re-sent as the
# full job, which carries the whole text at the end).
WATCH_QUEUE_MAX = 1024


class Watchers:
    def __init__(self) -> None:
        self._by_job: dict[str, set[asyncio.Queue[customer_pb2.JobEvent | None]]] = (
            defaultdict(set)
        )

    def subscribe(self, job_id: str) -> asyncio.Queue[customer_pb2.JobEvent | None]:
        queue: asyncio.Queue[customer_pb2.JobEvent | None] = asyncio.Queue(WATCH_QUEUE_MAX)
        self._by_job[job_id].add(queue)
        return queue

    def unsubscribe(self, job_id: str, queue: asyncio.Queue[customer_pb2.JobEvent | None]) -> None:
        queues = self._by_job.get(job_id)
        if queues is not None:
            queues.discard(queue)
            if not queues:
                del self._by_job[job_id]

    def has(self, job_id: str) -> bool:
        return job_id in self._by_job

    def publish(self, job_id: str, event: customer_pb2.JobEvent, final: bool = False) -> None:
        for queue in list(self._by_job.get(job_id, ())):
            if event.HasField("tokens"):
                if not queue.full():
                    queue.put_nowait(event)
                continue
            # State changes always go in; room is made by dropping the oldest events.
            while queue.qsize() >= WATCH_QUEUE_MAX - 1:
                queue.get_nowait()
            queue.put_nowait(event)
            if final:
                queue.put_nowait(None)
