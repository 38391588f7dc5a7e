"""refreshq's RQ queues, all on RQ's JSON serializer, and the order workers take jobs from them.

Urgent work (critical, high) always comes first. Refresh jobs (one province each: seconds to minutes)
and routine named tasks (normal, then low) take turns: after a refresh job a worker looks at the
routine queues first, after a routine job at the refresh queue first. So with a single worker a named
task waits at most for the province job in progress, never for a whole refresh, and a refresh waits at
most for one routine job between two of its province jobs, however long either backlog is.
"""

from __future__ import annotations

import redis
from rq import Queue
from rq.serializers import JSONSerializer

CRITICAL = "critical"
HIGH = "high"
REFRESH = "refresh"
NORMAL = "normal"
LOW = "low"

ALL_QUEUES: tuple[str, ...] = (CRITICAL, HIGH, REFRESH, NORMAL, LOW)
URGENT: tuple[str, ...] = (CRITICAL, HIGH)
ROUTINE: tuple[str, ...] = (NORMAL, LOW)


def dequeue_order(names: tuple[str, ...], served: str | None = None, current: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The order to try the queues `names` in after a job from `served` (None: before the first job);
    after an urgent job the `current` order stays, so the turn of refresh and routine work is kept."""
    if served in URGENT and current:
        return current
    urgent = tuple(n for n in URGENT if n in names)
    routine = tuple(n for n in ROUTINE if n in names)
    refresh = (REFRESH,) if REFRESH in names else ()
    return urgent + (refresh + routine if served in ROUTINE else routine + refresh)


def queue(conn: redis.Redis, name: str) -> Queue:
    return Queue(name, connection=conn, serializer=JSONSerializer)


def queues(conn: redis.Redis, names: tuple[str, ...] = ALL_QUEUES) -> list[Queue]:
    return [queue(conn, name) for name in names]


def register_queues(conn: redis.Redis) -> None:
    """Make the queues visible to RQ's tools (`rq info`, the dashboard) before any job is enqueued."""
    conn.sadd(Queue.redis_queues_keys, *(Queue.redis_queue_namespace_prefix + n for n in ALL_QUEUES))
