"""Customers watching jobs: one bounded queue per watch, fed by the control loop."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass

from hashserve.v1 import customer_pb2

# A watcher that cannot keep up loses token deltas, never state changes (those are re-sent as the
# full job, which carries the whole text at the end).
WATCH_QUEUE_MAX = 1024


@dataclass(frozen=True)
class WatchEnded:
    """This scheduler stopped serving (it stepped down, or stops): the watch ends UNAVAILABLE,
    saying so, and its customer watches again at the leader; the job goes on. Without it the
    server's stop cut the stream off with "Cancelling all calls", which says neither."""

    reason: str


# What a watch's queue carries: an event, its job's end (None), or this scheduler's.
WatchItem = customer_pb2.JobEvent | WatchEnded | None


class Watchers:
    def __init__(self) -> None:
        self._by_job: dict[str, set[asyncio.Queue[WatchItem]]] = defaultdict(set)

    def subscribe(self, job_id: str) -> asyncio.Queue[WatchItem]:
        queue: asyncio.Queue[WatchItem] = asyncio.Queue(WATCH_QUEUE_MAX)
        self._by_job[job_id].add(queue)
        return queue

    def unsubscribe(self, job_id: str, queue: asyncio.Queue[WatchItem]) -> None:
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

    def end_all(self, reason: str) -> int:
        """Tell every open watch this scheduler no longer serves it; how many were open."""
        ended = 0
        for queues in self._by_job.values():
            for queue in queues:
                while queue.full():
                    queue.get_nowait()
                queue.put_nowait(WatchEnded(reason))
                ended += 1
        return ended
