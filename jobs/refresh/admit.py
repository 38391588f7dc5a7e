"""Admitting waiting refresh tasks: when a running slot frees up, the first waiting task's plan job is
enqueued again; it admits the task (or not) atomically (jobs.limits.start_refresh)."""

from __future__ import annotations

from datetime import UTC, datetime

import redis

from jobs import keys
from jobs.config import Settings
from jobs.redis_values import as_text
from jobs.refresh.job import enqueue_plan
from jobs.statuses import RUNNING

# At most one nudge per waiting task in this many seconds.
NUDGE_SECONDS = 5


def admit_waiting(conn: redis.Redis, settings: Settings) -> int:
    """Enqueue the plan job of the first waiting task if a running slot is free; return how many."""
    head = conn.zrange(keys.TASKS_WAITING, 0, 0)
    if not head or conn.zcard(keys.tasks_with_status(RUNNING)) >= settings.limits.max_concurrent_tasks:
        return 0
    task_id = as_text(head[0])
    if not conn.set(keys.task_admission(task_id), "1", nx=True, ex=NUDGE_SECONDS):
        return 0
    enqueue_plan(conn, task_id, settings, nonce=f"-w{int(datetime.now(UTC).timestamp() * 1000)}")
    return 1
