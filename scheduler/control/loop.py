"""The control loop: owns the pure core, the journal and the agent sessions.

One asyncio task runs it. Each turn it asks the core for a `Step` (after a submit: place; every
tick: leases, deadlines, then place), writes the step's changed jobs to the journal, and only then
sends the step's assignments and cancels and tells watchers. Writing before acting is what makes a
crash safe: the journal never lags what an agent or a customer was told.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

from hashserve.v1 import customer_pb2
from scheduler.api import agent_codec
from scheduler.api.convert import job_to_proto
from scheduler.control.agent_events import (
    AgentEvent,
    AgentHeartbeat,
    AgentHello,
    AgentRefusal,
    JobOutcomeReport,
    JobProgressReport,
    JobStartedReport,
)
from scheduler.control.observe import LoopObserver
from scheduler.control.watchers import Watchers
from scheduler.core.clock import Clock
from scheduler.core.job_states import JobState
from scheduler.core.jobs import JobRecord
from scheduler.core.models import ModelSpec
from scheduler.core.placement import DEFAULT_PROFILE, Placement, ScoringProfile
from scheduler.core.scheduler import (
    Assign,
    CancelOnNode,
    LoadOnNode,
    Moved,
    SchedulerCore,
    SchedulerPolicy,
    Step,
)
from scheduler.journal.base import Fenced, Journal, JournalUnavailable

log = logging.getLogger("hashserve.scheduler")


# Ops state key of the models ops pinned on a node (a JSON list), after the node id.
PIN_KEY = "pin:"

# Group commit gathers submits while the event loop has other work ready, up to these bounds.
# grpc.aio hands the loop one new call at a time, so a busy server's submits reach the writer
# one by one; committing each at once costs a transaction, WAL pages and a thread hop per job
# (about 110 us of CPU of the 130 a one-job commit takes here, against 22 us a job in a commit
# of 64). An idle loop has nothing ready, so a lone submit is committed at once.
GROUP_COMMIT_MAX_CALLS = 256
GROUP_COMMIT_MAX_WAIT_S = 0.002


def new_job_id() -> str:
    return f"job_{uuid.uuid4().hex}"


@dataclass(eq=False)  # one agent's stream: sessions are told apart by identity
class AgentSession:
    node_id: str
    # Encoded messages (scheduler/api/agent_codec.py) for the agent's stream; None ends it.
    outbox: asyncio.Queue[object | None] = field(default_factory=asyncio.Queue)
    revoked: bool = False  # closed because its credential was revoked

    def send(self, msg: object) -> None:
        self.outbox.put_nowait(msg)

    def close(self) -> None:
        self.outbox.put_nowait(None)

    def revoke(self) -> None:
        self.revoked = True
        self.close()


class ControlLoop:
    def __init__(
        self,
        journal: Journal,
        catalogue: Mapping[str, ModelSpec],
        known_regions: Collection[str],
        clock: Clock,
        policy: SchedulerPolicy | None = None,
        profile: ScoringProfile | None = None,
        tick_s: float = 0.5,
    ) -> None:
        self.journal = journal
        self.catalogue = dict(catalogue)
        self.known_regions = frozenset(known_regions)
        self.clock = clock
        self.core = SchedulerCore(policy, profile or DEFAULT_PROFILE, self.catalogue)
        self.tick_s = tick_s
        self.sessions: dict[str, AgentSession] = {}
        self.watchers = Watchers()
        self.observers: list[LoopObserver] = []
        # A kick wakes the loop's wait (`_wake`), or, while a turn runs, asks for another at
        # once (`_kicked`). Not an Event under wait_for: that costs a task and a timer per
        # turn, and every group commit kicks.
        self._kicked = False
        self._wake: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        # Group commit: submits that arrive while a commit is on disk wait here and are written
        # together in the next one (one fsync for all of them).
        self._pending: list[
            tuple[Sequence[JobRecord], asyncio.Future[list[tuple[JobRecord, bool]]]]
        ] = []
        self._writing: list[
            tuple[Sequence[JobRecord], asyncio.Future[list[tuple[JobRecord, bool]]]]
        ] = []  # the batch whose commit runs now
        self._writer: asyncio.Task[None] | None = None
        self._stopping = False
        # What running generations have produced, by job: (attempt, text pieces, tokens). Kept in
        # memory only: after a move the next attempt resumes from it; after a scheduler restart
        # a moved job starts over.
        self._partial: dict[str, tuple[int, list[str], int]] = {}
        # Jobs moved off a node and not yet placed again: told to watchers when they are.
        self._moved: dict[str, Moved] = {}
        # The leader epoch every message to agents carries (scheduler/runtime/leader.py).
        self.epoch = 0
        # Called when a journal write fails after the core's memory changed (or the write was
        # fenced): memory and journal may differ, so the process must restart from the journal.
        self.on_fatal: Callable[[Exception], None] | None = None
        # Told of every agent message refused (the metrics count them).
        self.on_refused: Callable[[AgentRefusal], None] | None = None

    # ----- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        ops_state = self.journal.load_ops_state()
        self.core.drained = {
            key.removeprefix("drain:") for key in ops_state if key.startswith("drain:")
        }
        self.core.pinned = {
            key.removeprefix(PIN_KEY): set(json.loads(value))
            for key, value in ops_state.items() if key.startswith(PIN_KEY)
        }
        active = self.journal.load_active_jobs()
        self.core.restore(active, self.clock.now_s())
        if active:
            log.info("recovered %d active jobs from the journal", len(active))
        self._task = asyncio.create_task(self._run(), name="control-loop")

    async def stop(self) -> None:
        self._stopping = True
        self.kick()
        self.watchers.end_all("the scheduler is stopping: watch the job again (it goes on)")
        for session in list(self.sessions.values()):
            session.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        next_tick_s = 0.0
        while not self._stopping:
            await self._wait_for_kick()
            now_s = self.clock.now_s()
            try:
                started = time.perf_counter()
                ticked = now_s >= next_tick_s
                if ticked:
                    step = self.core.tick(now_s)
                    next_tick_s = now_s + self.tick_s
                else:
                    step = self.core.schedule(now_s)
                decide_s = time.perf_counter() - started
                self.apply(step, decide_s)
                if ticked:
                    forgotten, self.core.forgotten_nodes = self.core.forgotten_nodes, []
                    for node_id in forgotten:
                        log.info("forgot node %s: gone over %.0f h with nothing running",
                                 node_id, self.core.policy.forget_node_after_s / 3600)
                    for observer in self.observers:
                        observer.on_queue(self.core.jobs, self.core.queued_by_tier)
                        for node_id in forgotten:
                            observer.on_node_forgotten(node_id)
            except Exception:  # the loop must outlive one bad turn; the journal is intact
                log.exception("control loop turn failed")
                await asyncio.sleep(self.tick_s)

    async def _wait_for_kick(self) -> None:
        """Until the next kick, or `tick_s` at most."""
        if self._kicked:
            self._kicked = False
            return
        loop = asyncio.get_running_loop()
        wake: asyncio.Future[None] = loop.create_future()
        self._wake = wake
        timer = loop.call_later(self.tick_s, _wake_up, wake)
        try:
            await wake
        finally:
            timer.cancel()
            self._wake = None

    def kick(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)
        else:
            self._kicked = True

    def halt(self) -> None:
        """Act no more (the lease is lost, or memory and journal may differ); `stop` still
        ends the task and the sessions."""
        self._stopping = True
        self.kick()
        # Submits still waiting for their commit are told now, as UNAVAILABLE (retry with the
        # same key), not cut off by the server's stop as CANCELLED. A commit that lands after
        # all is found by that retry's idempotency key.
        waiting = [future for _, future in [*self._pending, *self._writing]]
        self._pending = []
        for future in waiting:
            if not future.done():
                future.set_exception(JournalUnavailable("the scheduler stepped down; retry"))
        self.watchers.end_all("this scheduler stepped down: watch the job again (it goes on)")

    # ----- the one boundary for side effects -------------------------------------------------

    def apply(self, step: Step, decide_s: float = 0.0) -> None:
        if not (step.changed or step.intents or step.decisions or step.unjournaled
                or step.capacity is not None):
            return
        now_s = self.clock.now_s()
        try:
            changed = _latest(step.changed)
            # What a customer is told (an end) waits for the disk; an assignment or a start
            # does not: lost in a power cut, it is a job placed again (its agent, reconnecting,
            # is told to drop that attempt). A submit was synced before it was answered.
            self.journal.write_jobs(changed, _decision_rows(step, now_s),
                                    synced=any(rec.terminal for rec in changed))
        except Exception as err:
            # The core has moved on and the journal has not: never act on that memory.
            if self.on_fatal is not None:
                self.halt()
                self.on_fatal(err)
            raise
        for move in step.moves:
            self._moved[move.job_id] = move
            log.info(
                "job %s moved off %s (attempt %d): %s", move.job_id, move.node_id, move.attempt,
                move.detail,
                extra={"job_id": move.job_id, "attempt": move.attempt, "node_id": move.node_id,
                       "site": move.site},
            )
        for intent in step.intents:
            if isinstance(intent, Assign):
                self._send_assignment(intent)
                continue
            session = self.sessions.get(intent.node_id)
            if session is None:
                continue  # the lease runs out and the job is placed again
            if isinstance(intent, CancelOnNode):
                session.send(agent_codec.cancel(intent))
            elif isinstance(intent, LoadOnNode):
                log.info("load %s on %s: %s", intent.model, intent.node_id, intent.reason,
                         extra={"agent_id": intent.node_id, "model": intent.model})
                session.send(agent_codec.load_model(intent))
            else:
                log.info("unload %s on %s: %s", intent.model, intent.node_id, intent.reason,
                         extra={"agent_id": intent.node_id, "model": intent.model})
                session.send(agent_codec.unload_model(intent))
        for rec in _latest(step.changed):
            _log_job_change(rec)
            if rec.terminal:
                self._partial.pop(rec.job_id, None)
                self._moved.pop(rec.job_id, None)
        for rec in _latest([*step.unjournaled, *step.changed]):
            if self.watchers.has(rec.job_id):
                self.watchers.publish(
                    rec.job_id, customer_pb2.JobEvent(job=job_to_proto(rec)), final=rec.terminal
                )
        for observer in self.observers:
            observer.on_step(step, now_s, decide_s)

    def _send_assignment(self, intent: Assign) -> None:
        """Send an assignment; for a job moved from another node, tell its watchers, and let a
        generation resume from the text it had produced where the new node's backend can."""
        rec = self.core.jobs.get(intent.job_id)
        if rec is None:
            return
        move = self._moved.pop(intent.job_id, None)
        partial = self._partial.pop(intent.job_id, None)
        resume_text, resumed = "", 0
        if move is not None:
            node = self.core.nodes.get(intent.node_id)
            if (
                partial is not None and partial[0] == move.attempt and partial[2] > 0
                and node is not None and rec.spec.model in node.info.resumable_models
            ):
                resume_text, resumed = "".join(partial[1]), partial[2]
            if self.watchers.has(intent.job_id):
                self.watchers.publish(
                    intent.job_id,
                    customer_pb2.JobEvent(
                        moved=customer_pb2.JobMoved(
                            from_node=move.node_id, from_site=move.site,
                            to_node=intent.node_id, to_site=intent.placement.site,
                            reason=move.reason.value, detail=move.detail,
                            resumed_tokens=resumed,
                        )
                    ),
                )
        session = self.sessions.get(intent.node_id)
        if session is not None:  # else the lease runs out and the job is placed again
            session.send(agent_codec.assignment(intent, rec.spec_blob, resume_text, resumed))

    # ----- customers ------------------------------------------------------------------------

    def submit(self, records: Sequence[JobRecord]) -> list[tuple[JobRecord, bool]]:
        """Journal first (raises IdempotencyConflict for the whole batch), then queue."""
        results = self.journal.insert_jobs(records)
        self._queue_durable([rec for rec, dedup in results if not dedup])
        return results

    def _queue_durable(self, fresh: Sequence[JobRecord]) -> None:
        """Hand journalled new jobs to the core and place them at once, before their submits
        are answered: waiting for the loop's next turn cost a job about 0.5 ms, the answers'
        turn and sends going first. If that placement fails, the loop's turn places them."""
        for rec in fresh:
            self.core.submit(rec)
        if not fresh:
            return
        for observer in self.observers:
            observer.on_submitted(fresh)
        if self._stopping or self._task is None:
            self.kick()  # not started (or stopping): the loop's turn decides, as ever
            return
        try:
            started = time.perf_counter()
            step = self.core.schedule(self.clock.now_s())
            self.apply(step, time.perf_counter() - started)
        except Exception:  # the jobs are durable and queued: the loop's turn tries again
            log.exception("placing newly submitted jobs failed")
            self.kick()

    async def submit_async(self, records: Sequence[JobRecord]) -> list[tuple[JobRecord, bool]]:
        """`submit`, with group commit: the journal write runs off the event loop, together with
        every other submit that arrives meanwhile. Answers once its jobs are durable."""
        return await self.submit_nowait(records)

    def submit_nowait(
        self, records: Sequence[JobRecord]
    ) -> asyncio.Future[list[tuple[JobRecord, bool]]]:
        """`submit_async`'s future, without a coroutine around it: a caller with many groups
        (a front's batch) queues them all for the next commit, then waits on their futures,
        with no task per group. Raises JournalUnavailable at once when stopping."""
        if self._stopping:
            raise JournalUnavailable("the scheduler is stopping; retry")
        future: asyncio.Future[list[tuple[JobRecord, bool]]] = (
            asyncio.get_running_loop().create_future()
        )
        self._pending.append((records, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_pending(), name="journal-writer")
        return future

    async def _gather_while_busy(self) -> None:
        """Yield to the loop while it has other callbacks ready (more submits are on their way
        in), for at most GROUP_COMMIT_MAX_WAIT_S or until GROUP_COMMIT_MAX_CALLS are pending.
        The ready queue is asyncio's own (`_ready`, on every CPython loop since 3.4); a loop
        without one commits at once, as before."""
        loop = asyncio.get_running_loop()
        ready = getattr(loop, "_ready", None)
        if ready is None:
            return
        deadline = time.perf_counter() + GROUP_COMMIT_MAX_WAIT_S
        while (ready and len(self._pending) < GROUP_COMMIT_MAX_CALLS
               and time.perf_counter() < deadline):
            await asyncio.sleep(0)

    async def _write_pending(self) -> None:
        while self._pending:
            await self._gather_while_busy()
            batch, self._pending = self._pending, []
            self._writing = batch
            groups = [records for records, _ in batch]
            started = time.perf_counter()
            try:
                results = await asyncio.to_thread(self.journal.insert_job_groups, groups)
            except Exception as err:  # nothing of this batch is durable: every caller hears it
                if isinstance(err, Fenced) and self.on_fatal is not None:
                    self.on_fatal(err)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(err)
                continue
            commit_s = time.perf_counter() - started
            for observer in self.observers:
                observer.on_commit(len(batch), commit_s)
            fresh: list[JobRecord] = []
            answered: list[tuple[asyncio.Future[list[tuple[JobRecord, bool]]],
                                 list[tuple[JobRecord, bool]]]] = []
            for (_, future), result in zip(batch, results, strict=True):
                if isinstance(result, Exception):
                    if not future.done():
                        future.set_exception(result)
                    continue
                fresh += [rec for rec, dedup in result if not dedup]
                answered.append((future, result))
            try:
                # Placed first: the assignments are then sent ahead of the answers.
                self._queue_durable(fresh)
            finally:
                for future, result in answered:
                    # A retry's stored job, as it stands now: the row the insert read off the
                    # loop may be older than what the loop did meanwhile (it may have ended).
                    answer = [(self.get(rec.job_id) or rec, True) if dedup else (rec, False)
                              for rec, dedup in result]
                    if not future.done():  # a caller that gave up still has its jobs run
                        future.set_result(answer)

    def get(self, job_id: str) -> JobRecord | None:
        return self.core.jobs.get(job_id) or self.journal.get_job(job_id)

    def cancel(self, job_id: str) -> JobRecord | None:
        step = self.core.cancel(job_id, self.clock.now_s())
        self.apply(step)
        return self.get(job_id)

    # ----- agents ---------------------------------------------------------------------------

    def refused(self, what: AgentRefusal) -> None:
        if self.on_refused is not None:
            self.on_refused(what)

    def open_session(self, hello: AgentHello) -> AgentSession:
        info = hello.info
        node_id = info.node_id
        old = self.sessions.get(node_id)
        if old is not None:
            old.close()  # a reconnect replaces the half-dead stream
        session = AgentSession(node_id)
        self.sessions[node_id] = session
        step = self.core.connect_node(info, hello.running, self.clock.now_s())
        session.send(
            agent_codec.welcome(
                node_id, heartbeat_interval_ms=1000, lease_ms=int(self.core.policy.lease_s * 1000)
            )
        )
        self.apply(step)
        self.kick()
        log.info(
            "agent %s connected (site %s, region %s)", node_id, info.site, info.region,
            extra={"agent_id": node_id, "site": info.site, "region": info.region},
        )
        return session

    def close_session(self, session: AgentSession) -> None:
        if self.sessions.get(session.node_id) is session:
            del self.sessions[session.node_id]
            self.core.disconnect_node(session.node_id, self.clock.now_s())
            node = self.core.nodes.get(session.node_id)
            if node is not None:
                for observer in self.observers:
                    observer.on_node(node, self.clock.now_s())
            log.info("agent %s disconnected", session.node_id, extra={"agent_id": session.node_id})

    def on_agent_message(self, session: AgentSession, event: AgentEvent) -> None:
        node_id = session.node_id
        now_s = self.clock.now_s()
        if isinstance(event, AgentHeartbeat):
            step = self.core.heartbeat(
                node_id,
                event.running,
                now_s,
                power_draw_kw=event.power_draw_kw,
                gpu_utilization=event.gpu_utilization,
                draining=event.draining,
                prefix_blocks=event.prefix_blocks,
                prefill_tokens_per_s=event.prefill_tokens_per_s,
                models=event.models,
            )
            self.apply(step)
            node = self.core.nodes.get(node_id)
            if node is not None:
                for observer in self.observers:
                    observer.on_node(node, now_s)
            if event.free_slots:
                self.kick()
        elif isinstance(event, JobStartedReport):
            if not self.core.is_current(node_id, event.job_id, event.attempt):
                self.refused(AgentRefusal.NOT_ITS_JOB)
                return
            self.apply(self.core.job_started(node_id, event.job_id, event.attempt, now_s))
        elif isinstance(event, JobProgressReport):
            if not self.core.is_current(node_id, event.job_id, event.attempt):
                self.refused(AgentRefusal.NOT_ITS_JOB)
                return
            kept = self._partial.get(event.job_id)
            if kept is None or kept[0] != event.attempt:
                kept = (event.attempt, [], 0)
            kept[1].append(event.text_delta)
            self._partial[event.job_id] = (kept[0], kept[1], event.tokens_so_far)
            if self.watchers.has(event.job_id):
                self.watchers.publish(
                    event.job_id,
                    customer_pb2.JobEvent(
                        tokens=customer_pb2.TokenDelta(
                            text=event.text_delta, tokens_so_far=event.tokens_so_far
                        )
                    ),
                )
        elif isinstance(event, JobOutcomeReport):
            self._on_outcome(session, event, now_s)

    def streamed(self, job_id: str) -> tuple[str, int] | None:
        """The text a running generation has produced so far, and its tokens (a watcher that
        subscribes late starts from it)."""
        kept = self._partial.get(job_id)
        return ("".join(kept[1]), kept[2]) if kept is not None else None

    def _on_outcome(self, session: AgentSession, outcome: JobOutcomeReport, now_s: float) -> None:
        if outcome.error:
            verdict = self.core.job_outcome(
                session.node_id, outcome.job_id, outcome.attempt, now_s,
                error=outcome.error, run_ms=outcome.run_ms, load_ms=outcome.load_ms,
            )
        else:
            verdict = self.core.job_outcome(
                session.node_id, outcome.job_id, outcome.attempt, now_s,
                result_blob=outcome.result_blob,
                run_ms=outcome.run_ms,
                energy_kwh=outcome.energy_kwh,
                tokens=outcome.tokens,
                completion_tokens=outcome.completion_tokens,
                load_ms=outcome.load_ms,
            )
        self.apply(verdict.step)
        if not verdict.accepted:
            self.refused(AgentRefusal.NOT_ITS_JOB)
            log.warning(
                "refused outcome of %s attempt %d from %s: %s",
                outcome.job_id, outcome.attempt, session.node_id, verdict.reason,
                extra={"job_id": outcome.job_id, "attempt": outcome.attempt,
                       "agent_id": session.node_id},
            )
        session.send(
            agent_codec.outcome_ack(
                outcome.job_id, outcome.attempt, verdict.accepted, verdict.reason
            )
        )
        self.kick()

    def active_counts(self) -> dict[JobState, int]:
        counts: dict[JobState, int] = {}
        for rec in self.core.jobs.values():
            counts[rec.state] = counts.get(rec.state, 0) + 1
        return counts


def _wake_up(wake: asyncio.Future[None]) -> None:
    if not wake.done():
        wake.set_result(None)


def _decision_rows(step: Step, now_s: float) -> list[tuple[float, str, str, str]]:
    rows = []
    for d in step.decisions:
        if isinstance(d, Placement):
            detail = {
                "node": d.node_id,
                "site": d.site,
                "energy_usd": d.score.energy_usd,
                "delay_usd": d.score.delay_usd,
                "warmth_usd": d.score.warmth_usd,
                "candidates": d.candidates,
            }
            rows.append((now_s, "placement", d.job_id, json.dumps(detail)))
    for job_id, node_id, attempt in step.answers:
        rows.append(
            (now_s, "outcome", job_id, json.dumps({"node": node_id, "attempt": attempt}))
        )
    return rows


def _log_job_change(rec: JobRecord) -> None:
    """One line per journalled change, with the ids a fleet's logs are searched by: INFO for what
    an operator looks for (a job that failed, expired or was placed again), DEBUG for the rest."""
    notable = rec.state in (JobState.FAILED, JobState.EXPIRED) or (
        rec.state is JobState.ASSIGNED and rec.attempt > 1
    )
    if notable or log.isEnabledFor(logging.DEBUG):
        fields = {
            "job_id": rec.job_id, "attempt": rec.attempt, "tenant": rec.tenant,
            "node_id": rec.node_id, "site": rec.site, "model": rec.spec.model,
        }
        log.log(
            logging.INFO if notable else logging.DEBUG,
            "job %s %s (attempt %d%s)%s",
            rec.job_id, rec.state.value, rec.attempt,
            f" on {rec.node_id}" if rec.node_id else "",
            f": {rec.error}" if rec.error else "",
            extra=fields,
        )


def _latest(records: Sequence[JobRecord]) -> list[JobRecord]:
    """The last version of each job in a step, in first-seen order."""
    latest: dict[str, JobRecord] = {}
    for rec in records:
        latest[rec.job_id] = rec
    return list(latest.values())
