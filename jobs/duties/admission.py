"""Scheduler duty: admit refresh tasks waiting for a running slot (REFRESHQ_MAX_CONCURRENT_TASKS).

A task that ends admits the next one itself (jobs.refresh.finish); this catches what that cannot: a
slot freed by a task whose jobs died, a limit raised, a nudge that was lost.
"""

from __future__ import annotations

import redis

from jobs.config import Settings
from jobs.refresh.admit import admit_waiting


def admit_waiting_tasks(conn: redis.Redis, settings: Settings) -> None:
    admit_waiting(conn, settings)
