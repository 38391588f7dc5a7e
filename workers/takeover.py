"""The end of an execution declared abandoned is not recorded: RQ's bookkeeping of it (status, result,
registries, counts) is skipped.

An execution is registered in its queue's started registry (RQ's Execution) from its start until its end is
recorded. The scheduler's cleanup removes it when its worker misses its heartbeats -- a dead worker, or one
only paused (a long GC pause, a VM stall, SIGSTOP) -- and the job is then retried elsewhere. A worker that
wakes up and finishes the job must not write its end over whatever the job's next execution records. (The
fast mode checks the same in the script that sends its batched bookkeeping, workers.fast.)
"""

from __future__ import annotations

import redis
from rq.job import Job

from jobs import keys
from jobs.rqseam.worker import WorkerSeam

STALE_RESULT = "stale_writes|result"  # the counter of ends not recorded (jobs.observe.counters.STALE_WRITES)


class TakeoverMixin(WorkerSeam):
    """For RQ worker classes: the ends of executions no longer registered as started are not recorded."""

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

    def may_record_end(self, job: Job) -> bool:
        return not self.taken_over(job) and super().may_record_end(job)
