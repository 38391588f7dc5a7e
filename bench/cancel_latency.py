"""Scenario 3: how long a running task keeps calling the upstream after `cancel_task` returns.

The task is cancelled at a fixed fraction of its progress (CANCEL_AT_PROGRESS), so the figure is
always measured and always at the same point of a refresh, however fast the refresh runs: the refresh
the status probes ran against is stopped first (if it still runs), and a new one is cancelled once its
progress reaches the mark.

The upstream counts every request it starts; after the cancel returns, its total is polled every
20 ms over a keep-alive connection until it has not moved for a quiet window. The last time it
moved is the last request of the task (the only one running), to within the poll interval.
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

from bench.harness import Bench, Upstream
from jobs import keys
from jobs.redis_values import as_text
from jobs.refresh.manager import SyncTaskManager
from jobs.statuses import CANCELLED, TERMINAL

POLL_SECONDS = 0.02
GIVE_UP_SECONDS = 60.0
CANCEL_AT_PROGRESS = 30  # percent: the provinces are walked, leaves are flowing, most are still to come


def at_progress(
    bench: Bench, manager: SyncTaskManager, upstream: Upstream, probed: str, quiet_seconds: float,
    workers: list[subprocess.Popen[bytes]],
) -> dict[str, Any]:
    """Stop the probed refresh if it still runs, then cancel a new one at CANCEL_AT_PROGRESS percent."""
    if as_text(bench.conn.hget(keys.task(probed), "status") or b"") not in TERMINAL:
        measure(bench, manager, upstream, probed, quiet_seconds)  # not the figure: its progress is wherever
    task_id = manager.create_full_refresh_task()
    bench.wait_for(lambda: _progress(bench, task_id) >= CANCEL_AT_PROGRESS
                   or as_text(bench.conn.hget(keys.task(task_id), "status") or b"") in TERMINAL,
                   GIVE_UP_SECONDS * 5, f"refresh {task_id} to reach {CANCEL_AT_PROGRESS}%", workers)
    at = _progress(bench, task_id)
    if as_text(bench.conn.hget(keys.task(task_id), "status") or b"") in TERMINAL:
        return {"skipped": f"the refresh ended before it reached {CANCEL_AT_PROGRESS}%", "task_id": task_id}
    return {**measure(bench, manager, upstream, task_id, quiet_seconds), "task_id": task_id,
            "cancel_at_progress": CANCEL_AT_PROGRESS, "progress_at_cancel": at}


def _progress(bench: Bench, task_id: str) -> int:
    return int(bench.conn.hget(keys.task(task_id), "progress") or 0)


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
