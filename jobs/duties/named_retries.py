"""Scheduler duty: move named-task runs whose RQ retry delay has passed back onto their queues.

RQ parks a retry with a delay in its ScheduledJobRegistry, which only RQ's own worker scheduler drains;
refreshq's workers run without it, so the active scheduler does this for named tasks.
"""

from __future__ import annotations

import time

import redis
from rq import Queue
from rq.job import Job
from rq.registry import ScheduledJobRegistry
from rq.serializers import JSONSerializer

from jobs import queues
from jobs.named.runs import RUN_FUNCS


def enqueue_due_retries(conn: redis.Redis, now: float | None = None) -> int:
    """Requeue the named-task runs whose retry is due at `now`; returns how many."""
    moved = 0
    timestamp = int(time.time() if now is None else now)
    for queue in queues.queues(conn):
        registry = ScheduledJobRegistry(queue=queue)  # type: ignore[no-untyped-call]
        for job_id in registry.get_jobs_to_schedule(timestamp):
            moved += _requeue_scheduled(conn, queue, registry, job_id)
    return moved


def _requeue_scheduled(conn: redis.Redis, queue: Queue, registry: ScheduledJobRegistry, job_id: str) -> int:
    try:
        job = Job.fetch(job_id, connection=conn, serializer=JSONSerializer)
    except Exception:
        return 0
    if job.func_name not in RUN_FUNCS:
        return 0  # not ours: left to whatever scheduled it
    with conn.pipeline() as pipe:
        queue.enqueue_job(job, pipeline=pipe)
        registry.remove(job, pipeline=pipe)
        pipe.execute()
    return 1
