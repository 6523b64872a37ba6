"""The job state machine, as a table.

A job moves only by `transition(state, event)`; anything not in `TRANSITIONS` is refused. The table
is the single place that says, for example, that a lost lease sends an assigned job back to the
queue while a finished job never moves again.
"""

from __future__ import annotations

from enum import Enum


class JobState(str, Enum):
    QUEUED = "queued"
    ASSIGNED = "assigned"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class JobEvent(str, Enum):
    ASSIGN = "assign"  # the placer chose a node; a lease starts
    START = "start"  # the agent confirmed it began
    SUCCEED = "succeed"
    FAIL = "fail"  # the agent reported an error and retries are spent
    RETRY = "retry"  # an agent error, lost lease or lost agent: back to the queue
    CANCEL = "cancel"
    EXPIRE = "expire"  # the deadline passed before it finished


TERMINAL_STATES = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.EXPIRED}
)

TRANSITIONS: dict[tuple[JobState, JobEvent], JobState] = {
    (JobState.QUEUED, JobEvent.ASSIGN): JobState.ASSIGNED,
    (JobState.QUEUED, JobEvent.CANCEL): JobState.CANCELLED,
    (JobState.QUEUED, JobEvent.EXPIRE): JobState.EXPIRED,
    (JobState.QUEUED, JobEvent.FAIL): JobState.FAILED,
    (JobState.ASSIGNED, JobEvent.START): JobState.RUNNING,
    # A fast job can finish before its start message is handled.
    (JobState.ASSIGNED, JobEvent.SUCCEED): JobState.SUCCEEDED,
    (JobState.ASSIGNED, JobEvent.FAIL): JobState.FAILED,
    (JobState.ASSIGNED, JobEvent.RETRY): JobState.QUEUED,
    (JobState.ASSIGNED, JobEvent.CANCEL): JobState.CANCELLED,
    (JobState.ASSIGNED, JobEvent.EXPIRE): JobState.EXPIRED,
    (JobState.RUNNING, JobEvent.SUCCEED): JobState.SUCCEEDED,
    (JobState.RUNNING, JobEvent.FAIL): JobState.FAILED,
    (JobState.RUNNING, JobEvent.RETRY): JobState.QUEUED,
    (JobState.RUNNING, JobEvent.CANCEL): JobState.CANCELLED,
    (JobState.RUNNING, JobEvent.EXPIRE): JobState.EXPIRED,
}


class IllegalTransition(ValueError):
    def __init__(self, state: JobState, event: JobEvent) -> None:
        super().__init__(f"a {state.value} job cannot {event.value}")
        self.state = state
        self.event = event


def transition(state: JobState, event: JobEvent) -> JobState:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition(state, event) from None


def can(state: JobState, event: JobEvent) -> bool:
    return (state, event) in TRANSITIONS
