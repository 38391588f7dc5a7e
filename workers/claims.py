"""Dequeueing through claims: a worker takes no job from a suspended queue, not even one more.

RQ checks its suspension flag once per loop, before a blocking BLPOP that can then wait minutes: a
suspend sent meanwhile still lets that worker take the next job. Here a job leaves its queue only in a
script that checks the suspensions (RQ's global `rq:suspended`, refreshq's per queue and per pool) in
the same step, into a claims list of the worker's own (keys.claims); a job a blocking wait moved there is
put back at the front when its queue was suspended meanwhile. A worker waiting on several queues waits on
their bells instead (keys.bell): a job BLPOP hands over is lost with the worker that took it. A fast
worker that claimed several jobs starts each one in a script with the same check (workers.fast), so a
suspension also holds the rest of its batch. A worker that dies holding claims stops renewing them, and
the scheduler puts them back at the front of their queues (jobs.duties.orphaned_claims).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from rq import Queue
from rq.job import Job

from jobs import keys
from jobs.queues import BELL_TOKENS, claim_keys
from jobs.rqseam.recorded import Command, ScriptKeys
from jobs.scripts import Scripts

# Seconds a claim outlives its worker's last renewal (each claim and each start renews it).
CLAIM_TTL = 30
# Longest blocking wait: a resumed queue, a drain or a stop is seen within this, whatever RQ's timeout.
BLOCK_SECONDS = 1


@dataclass
class Claimed:
    held: bool = False  # nothing may be taken: RQ's suspension, the pool's, or every queue suspended
    suspended: tuple[str, ...] = ()
    jobs: list[tuple[Job, Queue]] = field(default_factory=list)


class Claimer:
    """The claims of one worker (by name) on its queues."""

    def __init__(self, conn: redis.Redis, worker: str, pool: str, serializer: Any) -> None:
        self.conn, self.worker, self.pool, self.serializer = conn, worker, pool or "", serializer
        self.scripts = Scripts(conn)
        self.prefix = f"{keys.CLAIMS_PREFIX}{worker}:"
        self.guard_keys = [keys.RQ_SUSPENDED, keys.SUSPENDED_QUEUES, keys.SUSPENDED_POOLS, keys.CLAIMERS]
        self._step_names: tuple[str, ...] = ()
        self._step_fixed: list[str] = []

    def claim(self, queues: Sequence[Queue], limit: int, block: float | None) -> Claimed:
        """Up to `limit` jobs from `queues` (in order); with `block`, wait up to that long for one."""
        got = self._claim(queues, limit)
        if got.jobs or got.held or not block:
            return got
        active = [q for q in queues if q.name not in got.suspended]
        if not active:
            time.sleep(block)
            return Claimed(held=True, suspended=got.suspended)
        timeout = max(1, int(min(block, BLOCK_SECONDS)))
        if len(active) == 1:  # straight into the claims list: nothing is lost if this process dies now
            # Renewed first: a claim the wait takes lapses if this worker dies or freezes. Not in one pipeline
            # with the wait: a pipeline's EVALSHA is not reloaded after a server restart (NOSCRIPT).
            self.scripts.renew_claims(keys=[keys.CLAIMERS], args=[self.worker, CLAIM_TTL])
            popped = self.conn.blmove(active[0].key, self.prefix + active[0].name, timeout)
            return self._claim(queues, limit, (active[0].name, popped)) if popped else got
        # Several queues: no command moves from one of several lists at once, and a job BLPOP hands to a
        # worker that dies before claiming it, or whose machine is gone while the server still holds its
        # connection, would be lost. So the wait is on the queues' bells: a token lost with a worker loses
        # nothing, the job stays queued. A job pushed without a token (by RQ's own tools) is claimed at
        # the next look, within BLOCK_SECONDS.
        if self.conn.blpop([keys.bell(q.name) for q in active], timeout):
            return self._claim(queues, limit)
        return got

    def _claim(self, queues: Sequence[Queue], limit: int, popped: tuple[str, Any] = ("", "")) -> Claimed:
        names = [q.name for q in queues]
        queue_keys = [key for name in names for key in (keys.RQ_QUEUE_PREFIX + name, keys.claims(self.worker, name))]
        reply = self.scripts.claim(keys=[*self.guard_keys, *queue_keys], args=[
            self.worker, self.pool, limit, CLAIM_TTL, *popped, *names])
        by_name = {q.name: q for q in queues}
        got = Claimed(held=bool(reply[0]), suspended=tuple(n.decode() for n in reply[1]))
        claimed = [(reply[i].decode(), reply[i + 1].decode()) for i in range(2, len(reply), 2)]
        if not claimed:
            return got
        with self.conn.pipeline(transaction=False) as pipe:  # claimed, their hashes are read (their keys known now)
            for _, job_id in claimed:
                pipe.hgetall(keys.RQ_JOB_PREFIX + job_id)
            hashes = pipe.execute()
        for (name, job_id), mapping in zip(claimed, hashes, strict=True):
            if not mapping:  # deleted since it was enqueued: RQ's dequeue skips these too
                self.forget(name, job_id)
                continue
            job = Job(job_id, connection=self.conn, serializer=self.serializer)
            job.restore(mapping)
            got.jobs.append((job, by_name[name]))
        return got

    def forget(self, queue: str, job_id: str, pipeline: Any = None) -> None:
        """The job is started (or gone): no longer a claim."""
        (pipeline if pipeline is not None else self.conn).lrem(self.prefix + queue, 1, job_id)

    def step(self, names: Sequence[str], ended: Sequence[Command], dependents_key: str,
             start: tuple[str, str] | None, start_commands: Sequence[Command],
             ended_execution: tuple[str, str] = ("", "")) -> tuple[int, bool]:
        """Run `ended` (RQ's recorded commands) if `ended_execution` = (started registry, member) is still
        registered (or is none), then start `start` = (queue, job id) with `start_commands` unless its queue or
        pool is suspended. Returns (dependents waiting, or -1; started)."""
        fixed = self._step_keys(tuple(names))
        table = ScriptKeys(len(fixed))
        registry, member = ended_execution
        queue, job_id = start or ("", "")
        args = [self.worker, self.pool, CLAIM_TTL, len(names), table.index(registry) if member else 0, member,
                table.index(dependents_key) if dependents_key else 0, names.index(queue) + 1 if start else 0, queue,
                job_id, *table.encode(ended), *table.encode(start_commands)]
        reply = self.scripts.step(keys=[*fixed, *table.keys], args=args)
        return int(reply[0]), bool(reply[1])

    def _step_keys(self, names: tuple[str, ...]) -> list[str]:
        """STEP's first KEYS: the guards, the metric counters, then each queue and the worker's claims on it."""
        if self._step_names != names:
            self._step_names = names
            self._step_fixed = [*self.guard_keys, keys.METRIC_COUNTERS, *(
                key for name in names for key in (keys.RQ_QUEUE_PREFIX + name, keys.claims(self.worker, name)))]
        return self._step_fixed

    def release(self, names: Sequence[str]) -> int:
        """Every claim back to the front of its queue, in order."""
        return int(self.scripts.release_claims(
            keys=[keys.CLAIMERS, *claim_keys(self.worker, names)], args=[self.worker, BELL_TOKENS]))
