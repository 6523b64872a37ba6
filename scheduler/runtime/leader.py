"""The scheduler's leader lease: only the holder serves, and a standby takes over when it stops.

Several scheduler processes may share one journal (PostgreSQL across Ray nodes); one leads. The
lease is a journal row (`Journal.try_lease`) with a holder, an expiry on the journal's clock and
a fencing epoch that grows at every change of holder.

- **Standby.** A process that does not hold the lease polls for it every `ttl_s / 4` and serves
  nothing meanwhile (its ports stay closed, so clients and agents go to the leader's address).
- **Leader.** Once it holds the lease, the journal is fenced with its epoch: every later write
  checks the epoch in its own transaction and is refused (`Fenced`) once another took over.
  It renews every `ttl_s / 3`.
- **Stepping down.** A renewal refused (another holds the lease), or none that succeeded for
  `ttl_s` (the journal is unreachable, or this process was paused: Ray does not notice a
  paused process, so a standby is what covers it), calls `on_lost`. The host stops serving and
  exits; it comes back as a standby and recovers from the journal when it leads again.

An old leader that wakes from a pause can therefore change nothing: its journal writes are
refused, and its messages to agents carry its old epoch, which agents that met the new leader
refuse too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import time
from collections.abc import Callable

from scheduler.journal.base import Journal, Lease

log = logging.getLogger("hashserve.scheduler.leader")


def holder_id(instance: str) -> str:
    """`instance/host/pid`: a restarted process is a new holder (it may not reuse the old
    process's epoch: that one may still be alive, paused)."""
    return f"{instance}/{socket.gethostname()}/{os.getpid()}"


class Leadership:
    def __init__(self, journal: Journal, holder: str, ttl_s: float,
                 on_lost: Callable[[str], None],
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        if ttl_s <= 0:
            raise ValueError(f"the lease's ttl_s must be > 0, got {ttl_s!r}")
        self.journal = journal
        self.holder = holder
        self.ttl_s = ttl_s
        self.on_lost = on_lost
        self.monotonic = monotonic
        self.lease: Lease | None = None
        self.standby_since: float | None = None
        self._renewed_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._lost = False

    @property
    def epoch(self) -> int:
        return self.lease.epoch if self.lease is not None else 0

    async def acquire(self) -> Lease:
        """Wait until this process holds the lease; fence the journal with its epoch."""
        seen: tuple[str, int] | None = None
        said_s = -math.inf
        self.standby_since = self.monotonic()
        while True:
            started = self.monotonic()
            try:
                got, current = await asyncio.to_thread(self.journal.try_lease, self.holder,
                                                       self.ttl_s)
            except Exception as err:  # the journal away: keep waiting, and say so (each 10 s)
                if started - said_s >= 10.0:
                    log.warning("standby: cannot reach the journal for the leader lease: %s",
                                err)
                    said_s = started
                got, current = None, None
            if got is not None:
                self.lease, self._renewed_at = got, started
                self.journal.fence(got.epoch)
                waited_s = self.monotonic() - (self.standby_since or started)
                self.standby_since = None
                log.warning("leading as %s with epoch %d (after %.1f s as standby)",
                            self.holder, got.epoch, waited_s)
                return got
            if current is not None and (current.holder, current.epoch) != seen:
                seen = (current.holder, current.epoch)
                log.info("standby: %s leads with epoch %d; taking over if its lease lapses",
                         current.holder, current.epoch)
            await asyncio.sleep(self.ttl_s / 4)

    def start_renewing(self) -> None:
        self._task = asyncio.create_task(self._renew(), name="leader-lease")

    async def _renew(self) -> None:
        assert self.lease is not None
        epoch = self.lease.epoch
        while not self._lost:
            await asyncio.sleep(self.ttl_s / 3)
            started = self.monotonic()
            if started - self._renewed_at > self.ttl_s:
                # Paused, or the loop starved: the lease may have lapsed meanwhile, and a standby
                # may lead now. Say so before anything else runs on a stale belief.
                self._lose(f"no renewal for {started - self._renewed_at:.1f} s "
                           f"(the lease lasts {self.ttl_s:g} s)")
                return
            try:
                ok = await asyncio.to_thread(self.journal.renew_lease, self.holder, epoch,
                                             self.ttl_s)
            except Exception as err:
                log.warning("could not renew the leader lease: %s", err)
                continue  # retried until the lease would lapse, then lost above
            if not ok:
                self._lose(f"epoch {epoch} is no longer the lease's: another scheduler leads")
                return
            self._renewed_at = started

    def _lose(self, reason: str) -> None:
        if self._lost:
            return
        self._lost = True
        log.error("lost the leader lease (%s): this scheduler stops serving", reason)
        self.on_lost(reason)

    def lost(self, reason: str) -> None:
        """Step down now (a write was refused as fenced, or the journal failed a commit)."""
        self._lose(reason)

    async def stop(self, release: bool = True) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if release and self.lease is not None and not self._lost:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.journal.release_lease, self.holder,
                                        self.lease.epoch)
        self._lost = True


__all__ = ["Leadership", "holder_id"]
