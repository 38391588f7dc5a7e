"""Scheduler duty: jobs whose worker died, noticed within seconds instead of at the next worker maintenance.

RQ's started-job registries hold each running job with a heartbeat deadline; cleaning them moves a job
whose deadline passed to its failed registry (or to its RQ retry) and calls its failure callback with
AbandonedJobError. The failure is recorded on the way (jobs.failures), so the retry sweeper treats it as
a lost worker: transient, requeued at the front of its queue.

Not while Redis refuses writes, nor for LIVENESS_GRACE seconds after: no heartbeat could be written
meanwhile, so a late one says nothing about its worker (jobs/reconnect.py).
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from rq.exceptions import AbandonedJobError
from rq.job import Job
from rq.registry import StartedJobRegistry

from jobs import failures, queues
from jobs.named.history import lost_run_handler
from jobs.reconnect import REFUSALS
from jobs.refresh import fence
from jobs.refresh.job import REFRESH_FUNCS

log = logging.getLogger("refreshq.refresh")


def release_abandoned(job: Job, exc_type: type[BaseException], _exc: BaseException, _tb: Any) -> bool:
    """An RQ exception handler: a refresh job declared abandoned owns nothing any more (jobs.refresh.fence), so
    a work-horse of it that was only paused writes nothing when it wakes; its work is requeued and claimed
    by the next execution. Other failures pass through."""
    if issubclass(exc_type, AbandonedJobError) and job.func_name in REFRESH_FUNCS and job.args:
        try:
            fence.release_job(job.connection, str(job.args[0]), job.id)
        except redis.RedisError as exc:  # the next execution's claim takes the work over anyway
            log.warning("refresh: could not release the claims of abandoned job %s (%s)", job.id, exc)
    return True


# How the failure of an abandoned job is recorded: its kind (for the sweeper), a named run's loss, and the
# end of a refresh job's claims.
HANDLERS = [failures.exception_handler, lost_run_handler, release_abandoned]


def clean_started_registries(conn: redis.Redis) -> None:
    """Move jobs whose heartbeat expired out of the started registries (to retry or to failed)."""
    if REFUSALS.within():
        return
    for queue in queues.queues(conn):
        StartedJobRegistry(queue=queue).cleanup(exception_handlers=HANDLERS)
