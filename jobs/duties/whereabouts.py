"""Where a job is, for the reconciler (jobs.duties.reconcile): somewhere from which it will still run, or
nowhere.

A job's status says what it was last told, not whether anything will run it: a job deleted from its
queue (rq-dashboard's Delete, `Job.delete()`) has no hash at all, and one a failover or a removal took out
of its queue's list still says `queued`. So each status is checked against the place it implies:

- queued (or created): in its queue's list, in the claims list of a worker that renews its claims
  (workers.claims; a dead one's go back to the front of the queue: jobs.duties.orphaned_claims), or in RQ's
  intermediate queue (plain RQ workers);
- started: in its queue's started registry (a dead worker's job is moved on from there by
  jobs.duties.abandoned), or named as its current job by a worker that still beats (a job deleted while
  it ran still runs in its work-horse);
- failed: in its queue's failed registry, where the retry sweeper requeues or buries it;
- scheduled, deferred: in their registries.

Anything else, or a job whose hash is gone and that no worker runs, is nowhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import redis
from rq import Queue, Worker
from rq.job import Job, JobStatus
from rq.registry import DeferredJobRegistry, FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry
from rq.utils import utcparse

from jobs import keys
from jobs.redis_values import as_text, as_texts

# The registry each status implies (a queued or started job is looked for in more than one place).
_REGISTRIES = {
    JobStatus.FAILED.value: FailedJobRegistry,
    JobStatus.SCHEDULED.value: ScheduledJobRegistry,
    JobStatus.DEFERRED.value: DeferredJobRegistry,
}
_QUEUED = (JobStatus.QUEUED.value, JobStatus.CREATED.value)
# A worker whose last heartbeat is older than this is gone: a busy worker beats every 5 s, and its job is
# declared abandoned 15 s after its last beat (workers.JOB_MONITORING_INTERVAL, HEARTBEAT_GRACE); RQ keeps a
# dead worker's record, naming its job, for a minute more.
WORKER_SILENT_SECONDS = 15.0


@dataclass(frozen=True)
class Snapshot:
    """What the workers hold, read once per pass: the jobs they run, claimed and started."""

    running: frozenset[str]  # current jobs of registered workers that still beat
    claimed: frozenset[str]  # in the claims lists of workers that renew them
    started: frozenset[str]  # in a started registry


def read_snapshot(conn: redis.Redis, queue_names: Iterable[str]) -> Snapshot:
    """The current job of every worker that still beats, the claims of workers that renew them, and every job
    in the started registries of `queue_names` (a few round trips: these hold a few entries a worker)."""
    names = as_texts(conn.smembers(Worker.redis_workers_keys))
    claimers = as_texts(conn.zrange(keys.CLAIMERS, 0, -1))
    queue_names = list(queue_names)
    with conn.pipeline(transaction=False) as pipe:
        for key in names:
            pipe.hmget(key, "current_job", "last_heartbeat")
        for worker in claimers:
            for queue in queue_names:
                pipe.lrange(keys.claims(worker, queue), 0, -1)
        for queue in queue_names:
            pipe.zrange(StartedJobRegistry(queue, connection=conn).key, 0, -1)
        replies = pipe.execute()
    claims_end = len(names) + len(claimers) * len(queue_names)
    running = frozenset(as_text(job) for job, beat in replies[: len(names)] if job and beats(beat))
    claimed = frozenset(as_text(i) for ids in replies[len(names):claims_end] for i in ids)
    # Started entries are "<job id>:<execution id>" (RQ 2).
    started = frozenset(as_text(e).rpartition(":")[0] for ids in replies[claims_end:] for e in ids)
    return Snapshot(running, claimed, started)


@dataclass(frozen=True)
class JobState:
    job_id: str
    status: str | None  # None: the job's hash is gone
    origin: str


def read_states(conn: redis.Redis, job_ids: Iterable[str]) -> list[JobState]:
    """Each job's status and queue, as its hash says (one round trip)."""
    job_ids = list(job_ids)
    with conn.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hmget(Job.key_for(job_id), "status", "origin")
        rows = pipe.execute()
    return [JobState(job_id, as_text(status) if status else None, as_text(origin or b""))
            for job_id, (status, origin) in zip(job_ids, rows, strict=True)]


def places(conn: redis.Redis, snapshot: Snapshot, states: list[JobState]) -> dict[str, str | None]:
    """For each job, where it will still run from ("running", "claimed", "started", "queued", "failed",
    "scheduled", "deferred"), or None when it is nowhere (one round trip for the lot)."""
    found: dict[str, str | None] = {}
    probed: list[tuple[str, list[str]]] = []
    with conn.pipeline(transaction=False) as pipe:
        for state in states:
            found[state.job_id] = _known_place(snapshot, state)
            if found[state.job_id] is None:
                probed.append((state.job_id, _probe(conn, pipe, state)))
        replies = iter(pipe.execute())
    for job_id, names in probed:
        answers = [next(replies) for _ in names]
        hits = [name for name, reply in zip(names, answers, strict=True) if reply is not None]
        found[job_id] = hits[0] if hits else None
    return found


def _known_place(snapshot: Snapshot, state: JobState) -> str | None:
    if state.job_id in snapshot.running:
        return "running"
    if state.status in _QUEUED and state.job_id in snapshot.claimed:
        return "claimed"
    if state.job_id in snapshot.started:  # whatever its status says (a worker registers it before its start)
        return "started"
    return None


def _probe(conn: redis.Redis, pipe: redis.client.Pipeline, state: JobState) -> list[str]:
    """Queue the commands that look for the job where its status says it is; their names, in order."""
    if not state.origin:
        return []
    if state.status in _QUEUED:
        queue = Queue(state.origin, connection=conn)
        pipe.lpos(queue.key, state.job_id)
        pipe.lpos(queue.intermediate_queue_key, state.job_id)
        return ["queued", "queued"]
    registry = _REGISTRIES.get(state.status or "")
    if registry is None:
        return []
    pipe.zscore(registry(state.origin, connection=conn).key, state.job_id)
    return [state.status or ""]


def beats(last_heartbeat: bytes | None) -> bool:
    """Whether a worker whose record says this `last_heartbeat` still beats (WORKER_SILENT_SECONDS)."""
    if not last_heartbeat:
        return False
    try:
        beat = utcparse(as_text(last_heartbeat)).replace(tzinfo=UTC)
    except ValueError:
        return False
    return (datetime.now(UTC) - beat).total_seconds() < WORKER_SILENT_SECONDS
