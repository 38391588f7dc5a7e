"""The named tasks refreshq ships (the default REFRESHQ_TASK_MODULES): refresh-full, cleanup, data-snapshot."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from jobs import keys
from jobs.named import history
from jobs.named.catalog import configured_tasks
from jobs.named.definitions import Priority, ScheduleSpec
from jobs.named.runs import current_run
from jobs.named.task import task
from jobs.named.triggers import DEFAULT_TIMEZONE
from jobs.redis_values import as_texts
from jobs.refresh import published
from jobs.refresh.manager import SyncRefreshManager

# Task records older than this are deleted by `cleanup` (the same default as `refreshq cleanup`).
RETENTION_DAYS = 7.0
# What `cleanup` may delete: ended tasks only (the annotation is checked when a run is enqueued).
EndedStatus = Literal["SUCCEEDED", "FAILED", "CANCELLED"]
# Daily snapshots kept by `data-snapshot`.
SNAPSHOT_DAYS = 90


def _manager() -> SyncRefreshManager:
    run = current_run()
    return SyncRefreshManager(run.settings, run.conn)


@task(name="refresh-full", category="refresh", tags=("refresh", "data"), priority=Priority.HIGH, time_limit=7200)
def refresh_full(wait: bool = False, timeout: float = 7200) -> dict[str, Any]:
    """Start a refresh of every province; returns its task id (with wait=True, its final status)."""
    manager = _manager()
    task_id = manager.create_full_refresh_task()
    if not wait:
        # Waiting here would hold this worker while the refresh needs workers of its own.
        return {"task_id": task_id}
    status = manager.wait_for_completion(task_id, timeout=timeout, poll_interval=2)
    return {"task_id": task_id, "status": status["status"], "statistics": status["statistics"]}


@task(
    name="cleanup", category="maintenance", tags=("maintenance", "retention"), priority=Priority.LOW,
    time_limit=1800, schedule=ScheduleSpec(cron="30 3 * * *"),
)
def cleanup(older_than_days: float = RETENTION_DAYS, statuses: list[EndedStatus] | None = None) -> dict[str, Any]:
    """Delete ended refresh-task records (and their checkpoints) past retention; trim named-task history."""
    run = current_run()
    removed = _manager().cleanup_old_tasks(older_than_days, [str(s) for s in statuses] if statuses else None)
    tasks = configured_tasks(run.settings)
    trimmed = 0
    for name in history.tasks_with_history(run.conn):
        definition = tasks.get(name) if name in tasks else None
        bounds = history.Bounds(definition.history_limit, definition.history_days) if definition else history.Bounds()
        trimmed += history.trim(run.conn, name, bounds)
    return {"removed_tasks": removed, "older_than_days": older_than_days, "history_trimmed": trimmed}


@task(
    name="data-snapshot", category="data", tags=("data", "statistics"), priority=Priority.NORMAL,
    time_limit=600, schedule=ScheduleSpec(cron="0 1 * * *"),
)
def data_snapshot() -> dict[str, Any]:
    """Record today's statistics of the published data (provinces, records, leaves, versions)."""
    conn = current_run().conn
    provinces = published.verified_provinces(conn)
    now = datetime.now(UTC)
    day = now.astimezone(ZoneInfo(DEFAULT_TIMEZONE)).date().isoformat()
    snapshot = {
        "date": day,
        "taken_at": now.isoformat(timespec="seconds"),
        "provinces": len(provinces),
        "records": sum(int(p.get("records", 0)) for p in provinces.values()),
        "leaves": sum(int(p.get("leaves", 0)) for p in provinces.values()),
        "by_province": {code: {k: p.get(k) for k in ("name", "records", "leaves", "version", "published_at")}
                        for code, p in provinces.items()},
    }
    conn.hset(keys.SNAPSHOTS, day, json.dumps(snapshot, ensure_ascii=False))
    old = sorted(as_texts(conn.hkeys(keys.SNAPSHOTS)))[:-SNAPSHOT_DAYS]
    if old:
        conn.hdel(keys.SNAPSHOTS, *old)
    return {k: snapshot[k] for k in ("date", "provinces", "records", "leaves")}
