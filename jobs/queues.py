"""refreshq's RQ queues, all on RQ's JSON serializer, and the order workers take jobs from them.

Urgent work (critical, high) always comes first. Refresh jobs (one province each: seconds to minutes)
and routine named tasks (normal, then low) take turns: after a refresh job a worker looks at the
routine queues first, after a routine job at the refresh queue first. So with a single worker a named
task waits at most for the province job in progress, never for a whole refresh, and a refresh waits at
most for one routine job between two of its province jobs, however long either backlog is.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import redis
from rq import Queue
from rq.serializers import JSONSerializer

from jobs import keys
from jobs.rqseam.queue import NotifyingQueue

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


# Tokens a bell holds at most: enough to wake every waiting worker of a burst; past them, a worker woken
# claims jobs until none is left, and the others look again within workers.claims.BLOCK_SECONDS anyway.
BELL_TOKENS = 64


def ring(client: Any, names: Iterable[str]) -> None:
    """Queue on `client` (a pipeline, or the connection) a token on the bell of each of `names`."""
    for name in names:
        client.rpush(keys.bell(name), 1)
        client.ltrim(keys.bell(name), -BELL_TOKENS, -1)


def claim_keys(worker: str, names: Iterable[str]) -> list[str]:
    """Per queue, the keys release_claims.lua and requeue_orphaned_claims.lua take: the worker's claims, the
    queue, its bell."""
    out: list[str] = []
    for name in names:
        out += [keys.claims(worker, name), keys.RQ_QUEUE_PREFIX + name, keys.bell(name)]
    return out

class BellQueue(NotifyingQueue):
    """RQ's queue, ringing the queue's bell with every job it pushes, in the same transaction."""

    def pushed(self, pipeline: Any) -> None:
        ring(pipeline, [self.name])


def queue(conn: redis.Redis, name: str) -> Queue:
    return BellQueue(name, connection=conn, serializer=JSONSerializer)


def queues(conn: redis.Redis, names: tuple[str, ...] = ALL_QUEUES) -> list[Queue]:
    return [queue(conn, name) for name in names]


def register_queues(conn: redis.Redis) -> None:
    """Make the queues visible to RQ's tools (`rq info`, the dashboard) before any job is enqueued."""
    conn.sadd(Queue.redis_queues_keys, *(Queue.redis_queue_namespace_prefix + n for n in ALL_QUEUES))
