"""refreshq's RQ queues, in the order workers drain them, all on RQ's JSON serializer."""

from __future__ import annotations

import redis
from rq import Queue
from rq.serializers import JSONSerializer

CRITICAL = "critical"
HIGH = "high"
REFRESH = "refresh"
NORMAL = "normal"
LOW = "low"

# Refresh jobs sit after the short urgent work and before routine work.
ALL_QUEUES: tuple[str, ...] = (CRITICAL, HIGH, REFRESH, NORMAL, LOW)


def queue(conn: redis.Redis, name: str) -> Queue:
    return Queue(name, connection=conn, serializer=JSONSerializer)


def queues(conn: redis.Redis, names: tuple[str, ...] = ALL_QUEUES) -> list[Queue]:
    return [queue(conn, name) for name in names]


def register_queues(conn: redis.Redis) -> None:
    """Make the queues visible to RQ's tools (`rq info`, the dashboard) before any job is enqueued."""
    conn.sadd(Queue.redis_queues_keys, *(Queue.redis_queue_namespace_prefix + n for n in ALL_QUEUES))
