"""Fencing tokens: a write a job execution makes for a refresh task is accepted only from the execution that
owns that part of the task's work now (the scripts' side is jobs/scripts/_stale_check.lua).

A work-horse that was paused -- a long GC pause, a VM stall, SIGSTOP, a network partition -- is not dead: it
wakes and carries on with whatever it believed it owned, possibly after the scheduler declared its job
abandoned and another worker took the work over and finished it. So each execution of a plan or province
job *claims* its unit of the task ("plan", or the province's code) in the task's owners hash with a token of
its own (RQ's key of the execution), and every write it makes checks the hash in the same script or WATCHed
transaction. The next execution of the unit takes the claim over; it is dropped when its job is declared
abandoned, when the unit ends and when the task ends. A refused write changes nothing, is counted
(`stale_writes|<write>`), logged, and raises StaleExecutionError: the execution stops without writing more.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import redis
from rq.job import Job

from jobs import keys
from jobs.context import JobContext
from jobs.errors import StaleExecutionError
from jobs.observe import counters
from jobs.scripts import Scripts

log = logging.getLogger("refreshq.refresh")

PLAN = "plan"  # the unit of a task's plan job; a province job's unit is its province's code
STALE = b"STALE"


@dataclass(frozen=True)
class Fence:
    """One execution's claim on a unit of a task's work: what every fenced write is checked against."""

    task_id: str
    unit: str
    token: str  # "" for writes no execution makes (an operator's cancel, the sweeper): never refused

    @property
    def owners(self) -> str:
        return keys.task_owners(self.task_id)

    def args(self) -> list[str]:
        """The fence's arguments of a fenced script, after its other ones: unit, token."""
        return [self.unit, self.token]

    def refused(self, write: str) -> NoReturn:
        """A write of this execution was refused: log it and stop the execution."""
        log.warning("refresh %s: execution %s no longer owns %s (taken over, abandoned or ended); its %s write "
                    "was refused and it stops", self.task_id, self.token, self.unit, write)
        raise StaleExecutionError(f"execution {self.token} of refresh {self.task_id} no longer owns {self.unit}")

    def checked(self, reply: Any, write: str) -> Any:
        """A fenced script's reply, or StaleExecutionError when it refused the write."""
        if reply == STALE:
            self.refused(write)
        return reply


def unfenced(task_id: str) -> Fence:
    """The fence of writes no job execution makes: checked by nothing, but they end claims all the same."""
    return Fence(task_id, "", "")


def claim(conn: redis.Redis, job: Job, context: JobContext, task_id: str, unit: str) -> Fence:
    """Take `unit` of the task over for this execution of `job`; StaleExecutionError if the task has ended
    or the execution was declared abandoned (a paused work-horse that woke up)."""
    token = context.execution or f"{job.id}:{secrets.token_hex(8)}"  # not under refreshq's worker: no registry
    registry = context.started_registry or f"rq:wip:{job.origin}"
    fence = Fence(task_id, unit, token)
    answer = Scripts(conn).claim_unit(
        keys=[fence.owners, keys.task(task_id), registry, keys.METRIC_COUNTERS], args=[unit, token, context.execution]
    )
    if answer != b"OK":
        log.warning("refresh %s: execution %s cannot claim %s (%s)", task_id, token, unit, answer.decode())
        raise StaleExecutionError(f"execution {token} of refresh {task_id} cannot claim {unit}: {answer.decode()}")
    return fence


def release_job(conn: redis.Redis, task_id: str, job_id: str) -> int:
    """Drop every claim any execution of `job_id` holds on the task's work (its job was declared abandoned:
    a work-horse of it that was only paused writes nothing when it wakes)."""
    return int(Scripts(conn).release_job(keys=[keys.task_owners(task_id)], args=[f"{job_id}:"]))


def guarded(conn: redis.Redis, fence: Fence, write: str, queue_writes: Callable[[redis.client.Pipeline], None]) -> None:
    """Run the writes `queue_writes` queues in one transaction, only while the fence's execution owns its unit
    (WATCH on the owners hash: a takeover, an abandonment or an end in between makes it try again, and then
    refuse)."""
    with conn.pipeline() as pipe:
        while True:
            try:
                if fence.token:
                    pipe.watch(fence.owners)  # type: ignore[no-untyped-call]
                    if pipe.hget(fence.owners, fence.unit) != fence.token.encode():
                        pipe.reset()
                        conn.hincrby(keys.METRIC_COUNTERS, counters.name(counters.STALE_WRITES, write), 1)
                        fence.refused(write)
                pipe.multi()
                queue_writes(pipe)
                pipe.execute()
                return
            except redis.WatchError:
                continue
