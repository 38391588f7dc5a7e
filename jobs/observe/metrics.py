"""The metrics report: refresh tasks by status, success rate, hospitals found, mean run time (from the start
of each run) and mean queue wait, apart; the active tasks. A few Redis reads, whatever the number of records.

Counts by status come from the status indexes (tasks that ended within the window, by their end time);
means and hospitals from the hourly sums the task-status script keeps (so a window is counted to the
hour: its oldest hour whole).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import redis

from jobs import keys
from jobs.config import Settings
from jobs.errors import ValidationError
from jobs.observe import snapshot as snap
from jobs.redis_values import as_text_map
from jobs.statuses import CANCELLED, FAILED, PENDING, RUNNING, SUCCEEDED, TERMINAL

WINDOWS: dict[str, float | None] = {"24h": 86_400.0, "7d": 7 * 86_400.0, "all": None}


def iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds") if ts is not None else None


def _window_seconds(window: str) -> float | None:
    if window not in WINDOWS:
        raise ValidationError(f"window {window!r} is not valid: expected one of {', '.join(WINDOWS)}")
    return WINDOWS[window]


def ended_counts(conn: redis.Redis, since: float | None) -> dict[str, int]:
    """Refresh tasks that ended since `since` (None: ever), by status, from the by-updated indexes."""
    with conn.pipeline(transaction=False) as pipe:
        for status in TERMINAL:
            index = keys.tasks_with_status_by_updated(status)
            if since is None:
                pipe.zcard(index)
            else:
                pipe.zcount(index, since, "+inf")
        return {status: int(n) for status, n in zip(TERMINAL, pipe.execute(), strict=True)}


def _sums(conn: redis.Redis, since: float | None, now: float) -> dict[str, float]:
    """The hourly sums of the window added up (the all-time sums for no window)."""
    if since is None:
        hashes = [conn.hgetall(keys.METRIC_TOTALS)]
    else:
        step = keys.METRIC_HOUR_SECONDS
        hours = range(int(since // step) * step, int(now // step) * step + 1, step)
        with conn.pipeline(transaction=False) as pipe:
            for hour in hours:
                pipe.hgetall(keys.metric_hour(hour))
            hashes = pipe.execute()
    total: dict[str, float] = {}
    for raw in hashes:
        for name, value in as_text_map(raw).items():
            total[name] = total.get(name, 0.0) + float(value)
    return total


def _mean(total: float, count: float) -> float | None:
    return round(total / count, 3) if count else None


def success_rate(succeeded: int, failed: int) -> float | None:
    """Percent of the refreshes that ended succeeded or failed that succeeded (cancelled ones are neither)."""
    ended = succeeded + failed
    return round(100.0 * succeeded / ended, 2) if ended else None


def metrics_report(
    conn: redis.Redis, settings: Settings, window: str = "24h", snapshot: snap.Snapshot | None = None
) -> dict[str, Any]:
    """The metrics report of the reference design, over `window` ("24h", "7d" or "all")."""
    seconds = _window_seconds(window)
    shot = snapshot or snap.take(conn, with_memory=False)
    now = shot.now
    since = now - seconds if seconds is not None else None
    ended = ended_counts(conn, since)
    sums = _sums(conn, since, now)
    runs = sum(v for k, v in sums.items() if k.startswith("run_n|"))
    run_sum = sum(v for k, v in sums.items() if k.startswith("run_sum|"))
    counts = {
        "pending": shot.tasks_by_status[PENDING], "running": shot.tasks_by_status[RUNNING],
        "succeeded": ended[SUCCEEDED], "failed": ended[FAILED], "cancelled": ended[CANCELLED],
    }
    active = [row.as_active(now) for row in shot.running + shot.pending]
    return {
        "window": window,
        "since": iso(since),
        "generated_at": iso(now),
        "tasks": {"total": sum(counts.values()), **counts},
        "success_rate": success_rate(ended[SUCCEEDED], ended[FAILED]),
        "hospitals_found": int(sums.get("hospitals", 0)),
        "runs_timed": int(runs),
        "mean_run_seconds": _mean(run_sum, runs),
        "mean_run_seconds_succeeded": _mean(sums.get(f"run_sum|{SUCCEEDED}", 0), sums.get(f"run_n|{SUCCEEDED}", 0)),
        "mean_queue_wait_seconds": _mean(sums.get("wait_sum", 0), sums.get("wait_n", 0)),
        "active_total": shot.tasks_by_status[PENDING] + shot.tasks_by_status[RUNNING],
        "active_tasks": active,
    }
