"""Scheduler duty: jobs whose worker died, noticed within seconds instead of at the next worker maintenance.

RQ's started-job registries hold each running job with a heartbeat deadline; cleaning them moves a job
whose deadline passed to its failed registry (or to its RQ retry) and calls its failure callback with
AbandonedJobError. The failure is recorded on the way (jobs.failures), so the retry sweeper treats it as
a lost worker: transient, requeued at the front of its queue.

Not while Redis refuses writes, nor for LIVENESS_GRACE seconds after: no heartbeat could be written
meanwhile, so a late one says nothing about its worker (jobs/reconnect.py).
"""

from __future__ import annotations

import redis
from rq.registry import StartedJobRegistry

from jobs import failures, queues
from jobs.named.history import lost_run_handler
from jobs.reconnect import REFUSALS

# How the failure of an abandoned job is recorded: its kind (for the sweeper), and a named run's loss.
HANDLERS = [failures.exception_handler, lost_run_handler]


def clean_started_registries(conn: redis.Redis) -> None:
    """Move jobs whose heartbeat expired out of the started registries (to retry or to failed)."""
    if REFUSALS.within():
        return
    for queue in queues.queues(conn):
        StartedJobRegistry(queue=queue).cleanup(exception_handlers=HANDLERS)
