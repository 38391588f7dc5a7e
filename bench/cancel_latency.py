"""Scenario 3: how long a running task keeps calling the upstream after `cancel_task` returns.

The upstream counts every request it starts; after the cancel returns, its total is polled every
20 ms over a keep-alive connection until it has not moved for a quiet window. The last time it
moved is the last request of the task (the only one running), to within the poll interval.
"""

from __future__ import annotations

import time
from typing import Any

from bench.harness import Bench, Upstream
from jobs import keys
from jobs.redis_values import as_text
from jobs.refresh.manager import SyncTaskManager
from jobs.statuses import CANCELLED

POLL_SECONDS = 0.02
GIVE_UP_SECONDS = 60.0


def measure(
    bench: Bench, manager: SyncTaskManager, upstream: Upstream, task_id: str, quiet_seconds: float
) -> dict[str, Any]:
    total_before = upstream.total()
    started = time.perf_counter()
    accepted = manager.cancel_task(task_id)
    returned = time.perf_counter()
    last_total = at_return = upstream.total()
    last_change = returned
    cancelled_after: float | None = None
    while True:
        now = time.perf_counter()
        if now - last_change >= quiet_seconds and cancelled_after is not None:
            break
        if now - returned > GIVE_UP_SECONDS:
            break
        time.sleep(POLL_SECONDS)
        total = upstream.total()
        if total != last_total:
            last_total, last_change = total, time.perf_counter()
        if cancelled_after is None and as_text(bench.conn.hget(keys.task(task_id), "status") or b"") == CANCELLED:
            cancelled_after = time.perf_counter() - returned
    # A request starting after the quiet window would mean the window was too short: say so.
    time.sleep(quiet_seconds)
    late = upstream.total() - last_total
    return {
        "accepted": accepted,
        "call_ms": round((returned - started) * 1000, 3),
        "stop_seconds": round(last_change - returned, 3),
        "requests_after_return": last_total - at_return,
        "requests_during_call": at_return - total_before,
        "status_cancelled_after_seconds": round(cancelled_after, 3) if cancelled_after is not None else None,
        "requests_after_quiet_window": late,
        "resolution_seconds": POLL_SECONDS,
        "quiet_window_seconds": quiet_seconds,
    }
