"""RQ's Queue and Job, as refreshq extends them: a hook on every push of a job id, and classes that are always
JSON-serialized whatever their caller passes (rq-scheduler builds jobs and queues without a serializer).

Relies on RQ pushing every job id, however it is enqueued (enqueue, requeue, retries, dependents, scheduled
jobs), through `Queue.push_job_id` (Queue._enqueue_job calls it in RQ 2.12).
"""

from __future__ import annotations

from typing import Any

import redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer


class NotifyingQueue(Queue):
    """RQ's Queue, calling `pushed` in the same transaction as each push of a job id."""

    def pushed(self, pipeline: Any) -> None:
        """Hook: queue on `pipeline` what goes with a push onto this queue (nothing by default)."""

    def push_job_id(self, job_id: str, pipeline: Any = None, at_front: bool = False) -> None:
        if pipeline is not None:
            super().push_job_id(job_id, pipeline=pipeline, at_front=at_front)
            self.pushed(pipeline)
            return
        with self.connection.pipeline() as pipe:
            super().push_job_id(job_id, pipeline=pipe, at_front=at_front)
            self.pushed(pipe)
            pipe.execute()


class JSONJob(Job):
    """An RQ job that is always JSON-serialized: rq-scheduler creates and fetches jobs without a serializer."""

    def __init__(self, id: str | None = None, connection: redis.Redis | None = None, serializer: Any = None) -> None:
        super().__init__(id, connection=connection, serializer=JSONSerializer)


class JSONQueue(NotifyingQueue):
    """An RQ queue that always uses the JSON serializer and JSONJob, whatever rq-scheduler passes."""

    def __init__(self, name: str = "default", connection: redis.Redis | None = None, **kwargs: Any) -> None:
        kwargs["serializer"] = JSONSerializer
        kwargs["job_class"] = JSONJob
        super().__init__(name, connection=connection, **kwargs)
