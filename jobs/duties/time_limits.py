"""Scheduler duty: time limits of refresh tasks: a soft limit is recorded, a hard one fails the task.

RQ's job timeout bounds one job; a task is many jobs over time (and may wait for retries), so its
limit is measured from the start of its current attempt and enforced from outside its jobs.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import redis

from jobs import keys
from jobs.config import Settings
from jobs.redis_values import as_text, as_texts
from jobs.refresh import records
from jobs.refresh.finish import BY_TIMEOUT, finish_refresh
from jobs.statuses import RUNNING

log = logging.getLogger("refreshq.time_limits")

SOFT_LIMIT_FRACTION = 0.9
# How long running jobs get to notice a hard limit before the task is ended without them.
GRACE_SECONDS = 30.0


def enforce_time_limits(conn: redis.Redis, settings: Settings) -> None:
    """Record a soft limit passed; stop a task past its hard limit, and end it if its jobs do not."""
    now = datetime.now(UTC)
    task_ids = as_texts(conn.zrange(keys.tasks_with_status(RUNNING), 0, -1))
    with conn.pipeline(transaction=False) as pipe:
        for task_id in task_ids:
            pipe.hmget(keys.task(task_id), "attempt_started_at", "timeout_seconds", "soft_limit_exceeded_at")
        rows = pipe.execute()
    for task_id, (started, timeout, soft) in zip(task_ids, rows, strict=True):
        if not started or not timeout:
            continue
        elapsed = (now - datetime.fromisoformat(started.decode())).total_seconds()
        limit = float(timeout)
        if elapsed >= SOFT_LIMIT_FRACTION * limit and not soft:
            conn.hsetnx(keys.task(task_id), "soft_limit_exceeded_at", records.now_iso())
            log.warning("time limit: task %s passed its soft limit (%.0f of %.0f s)", task_id, elapsed, limit)
        if elapsed >= limit:
            _hard_limit(conn, task_id, elapsed - limit, settings)


def _hard_limit(conn: redis.Redis, task_id: str, overdue: float, settings: Settings) -> None:
    if conn.set(keys.task_cancel(task_id), BY_TIMEOUT, nx=True):
        log.warning("time limit: task %s ran past its hard limit; stopping it", task_id)
        return
    flag = as_text(conn.get(keys.task_cancel(task_id)) or b"")
    if flag == BY_TIMEOUT and overdue >= GRACE_SECONDS:
        finish_refresh(conn, task_id, settings)  # its jobs never came back to end it (dead, or waiting for a retry)
