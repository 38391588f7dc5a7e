"""Scheduler duty: jobs a worker dequeued but had not started when it died go back to the front of their
queue (workers.claims). A worker renews its claims each time it claims or starts a job; one that stopped
renewing them for CLAIM_TTL seconds is gone (a started job is the started registry's business instead:
jobs.duties.abandoned). Not while Redis refuses writes, nor soon after: no claim could be renewed meanwhile."""

from __future__ import annotations

import redis

from jobs import keys, queues
from jobs.reconnect import REFUSALS
from jobs.redis_values import as_texts
from jobs.scripts import Scripts


def requeue_orphaned_claims(conn: redis.Redis) -> int:
    """Put the claims of dead workers back at the front of their queues, in order; returns how many."""
    if REFUSALS.within():
        return 0
    seconds, micros = conn.time()
    lapsed = as_texts(conn.zrangebyscore(keys.CLAIMERS, "-inf", seconds + micros / 1_000_000))
    scripts, n = Scripts(conn), 0
    for worker in lapsed:  # the script checks again that the worker's claims are still lapsed
        n += int(scripts.requeue_orphaned_claims(
            keys=[keys.CLAIMERS, *queues.claim_keys(worker, queues.ALL_QUEUES)], args=[worker, queues.BELL_TOKENS]))
    return n

