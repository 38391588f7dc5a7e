"""The end of an execution declared abandoned is not recorded: RQ's bookkeeping of it (status, result,
registries, counts) is skipped.

An execution is registered in its queue's started registry (RQ's Execution) from its start until its end is
recorded. The scheduler's cleanup removes it when its worker misses its heartbeats -- a dead worker, or one
only paused (a long GC pause, a VM stall, SIGSTOP) -- and the job is then retried elsewhere. A worker that
wakes up and finishes the job must not write its end over whatever the job's next execution records. (The
fast mode checks the same in the script that sends its batched bookkeeping, workers.fast.)
"""

from __future__ import annotations

from typing import Any

import redis
from rq.executions import Execution
from rq.job import Job, Retry
from rq.queue import Queue

from jobs import keys

STALE_RESULT = "stale_writes|result"  # the counter of ends not recorded (jobs.observe.counters.STALE_WRITES)


class TakeoverMixin:
    """For RQ worker classes: the ends of executions no longer registered as started are not recorded."""

    name: str
    log: Any
    connection: redis.Redis
    execution: Execution | None

    def taken_over(self, job: Job) -> bool:
        """True when this execution is no longer registered as started (declared abandoned): logged, counted."""
        if self.execution is None:
            return False
        try:
            member = self.connection.zscore(job.started_job_registry.key, self.execution.composite_key)
            if member is None:
                self.connection.hincrby(keys.METRIC_COUNTERS, STALE_RESULT, 1)
        except redis.RedisError:
            return False  # RQ's own writes meet the same server: they fail or wait as they would have
        if member is None:
            self.log.warning("Worker %s: execution %s of job %s was declared abandoned and may run elsewhere now; "
                             "not recording its end", self.name, self.execution.composite_key, job.id)
        return member is None

    def handle_job_success(self, job: Job, queue: Queue, started_job_registry: Any) -> None:
        if not self.taken_over(job):
            super().handle_job_success(job, queue, started_job_registry)  # type: ignore[misc]

    def handle_job_failure(
        self, job: Job, queue: Queue, started_job_registry: Any = None, exc_string: str = ""
    ) -> None:
        if not self.taken_over(job):
            super().handle_job_failure(job, queue, started_job_registry, exc_string)  # type: ignore[misc]

    def handle_job_retry(self, job: Job, queue: Queue, retry: Retry, started_job_registry: Any, execution: Any) -> None:
        if not self.taken_over(job):
            super().handle_job_retry(job, queue, retry, started_job_registry, execution)  # type: ignore[misc]
