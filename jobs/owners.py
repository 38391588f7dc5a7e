"""Owners and per-user limits: who asked for a refresh task or a named-task run, and how much they may have.

Every refresh task and every run records its owner (the API token's user, `cli` for the command line).
A token may carry limits on its user's work (the reference design's TASK_MAX_SIZE_PER_USER): running
(refresh tasks RUNNING, runs started) and pending (tasks PENDING, runs queued, scheduled or deferred).
The counts are read under WATCH in the transaction that creates the task or the run, so two requests
racing for a user's last slot cannot both get it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis
from rq.job import Job

from jobs import keys
from jobs.errors import LimitExceededError
from jobs.redis_values import as_text, as_texts
from jobs.statuses import PENDING, RUNNING

CLI_OWNER = "cli"
# A run's RQ status -> whether it counts as running (True) or pending (False); any other status has ended.
_RUN_STATES = {"started": True, "queued": False, "scheduled": False, "deferred": False, "created": False}
# What a refused request is told to wait before asking again: about one province job's time.
RETRY_AFTER = 10


@dataclass(frozen=True)
class Owner:
    """The user a task or run belongs to, with their limits (None: unlimited)."""

    name: str = CLI_OWNER
    max_running: int | None = None
    max_pending: int | None = None

    @property
    def limited(self) -> bool:
        return self.max_running is not None or self.max_pending is not None


@dataclass(frozen=True)
class Usage:
    """A user's running and pending work, and the run ids found to have ended (to drop from the index)."""

    running: int
    pending: int
    ended_runs: tuple[str, ...]


def watched_keys(owner: Owner) -> list[str]:
    """The keys whose change invalidates a limit check: WATCH them before `usage`."""
    return [keys.tasks_with_status_of_owner(PENDING, owner.name), keys.tasks_with_status_of_owner(RUNNING, owner.name),
            keys.owner_runs(owner.name)]


def usage(conn: redis.Redis, pipe: redis.client.Pipeline, owner: Owner) -> Usage:
    """The owner's work now (`pipe` is WATCHing `watched_keys`, so its reads run at once)."""
    running = int(pipe.zcard(keys.tasks_with_status_of_owner(RUNNING, owner.name)))
    pending = int(pipe.zcard(keys.tasks_with_status_of_owner(PENDING, owner.name)))
    run_ids = as_texts(pipe.zrange(keys.owner_runs(owner.name), 0, -1))
    ended: list[str] = []
    if run_ids:
        # The runs' states change without touching the watched keys (a worker starts one): read them
        # on the plain connection, in one round trip; a state change moves work from pending to
        # running, never past the sum the limits check.
        with conn.pipeline(transaction=False) as reads:
            for job_id in run_ids:
                reads.hget(Job.key_for(job_id), "status")
            states = reads.execute()
        for job_id, state in zip(run_ids, states, strict=True):
            started = _RUN_STATES.get(as_text(state)) if state is not None else None
            if started is None:
                ended.append(job_id)
            elif started:
                running += 1
            else:
                pending += 1
    return Usage(running, pending, tuple(ended))


def check(owner: Owner, now_usage: Usage) -> None:
    """LimitExceededError when the owner may not add one more pending piece of work."""
    if owner.max_running is not None and now_usage.running >= owner.max_running:
        raise LimitExceededError(
            f"user {owner.name!r} has {now_usage.running} running (limit {owner.max_running}): "
            "try again when one has ended", RETRY_AFTER)
    if owner.max_pending is not None and now_usage.pending >= owner.max_pending:
        raise LimitExceededError(
            f"user {owner.name!r} has {now_usage.pending} pending (limit {owner.max_pending}): "
            "try again when one has started", RETRY_AFTER)


def admit(conn: redis.Redis, pipe: redis.client.Pipeline, owner: Owner) -> Usage | None:
    """Inside the caller's WATCH (before its MULTI): check the owner's limits; None for an unlimited owner."""
    if not owner.limited:
        return None
    current = usage(conn, pipe, owner)
    check(owner, current)
    return current


def note_run(pipe: redis.client.Pipeline, owner: Owner, job_id: str, seen: Usage | None) -> None:
    """Inside the caller's MULTI: index a limited owner's new run, and drop the ones found ended."""
    if not owner.limited:
        return
    if seen is not None and seen.ended_runs:
        pipe.zrem(keys.owner_runs(owner.name), *seen.ended_runs)
    pipe.zadd(keys.owner_runs(owner.name), {job_id: time.time()})
