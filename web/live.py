"""A refresh task as the API and the pages show it live: the status dict plus the stalled flag and the
record rate, the per-province bars, and a cheap fingerprint that tells when any of it changed."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import redis

from jobs import keys
from jobs.redis_values import as_text
from jobs.refresh.manager import SyncRefreshManager
from jobs.refresh.records import is_stalled, progress_changed_at
from jobs.statuses import RUNNING

_FINGERPRINT_FIELDS = ("status", "updated_at", "progress", "progress_moved_ts", "attempt_started_at", "started_at")


def view(status: dict[str, Any], stall_seconds: float, now: float | None = None) -> dict[str, Any]:
    """The status dict with `stalled` (no progress for REFRESHQ_STALL_SECONDS while RUNNING) and
    `records_per_second` (hospitals staged since this attempt started, while RUNNING)."""
    now = time.time() if now is None else now
    rate = None
    started = status.get("started_at")
    if status["status"] == RUNNING and started:
        elapsed = now - datetime.fromisoformat(started).timestamp()
        rate = round(status["statistics"]["hospitals_found"] / elapsed, 1) if elapsed > 0 else None
    return {**status, "stalled": is_stalled(status, stall_seconds, now), "records_per_second": rate}


def payload(manager: SyncRefreshManager, task_id: str, stall_seconds: float) -> dict[str, Any]:
    """What the refresh page draws: the task and one bar per province."""
    status = view(manager.get_task_status(task_id), stall_seconds)
    return {"task": status, "provinces": manager.province_progress(task_id)}


def fingerprint(conn: redis.Redis, task_id: str, stall_seconds: float) -> tuple[Any, ...] | None:
    """One round trip that changes whenever the page's picture does (None: no such task)."""
    with conn.pipeline(transaction=False) as pipe:
        pipe.hmget(keys.task(task_id), list(_FINGERPRINT_FIELDS))
        pipe.hget(keys.task_stats(task_id), "leaves_done")
        pipe.hlen(keys.task_provinces_ended(task_id))
        pipe.hlen(keys.task_failed_regions(task_id))
        pipe.hmget(keys.UPSTREAM_PACE, ["mode", "rate", "paused_until"])  # the upstream's pacing, shown too
        fields, leaves, ended, failed, pacing = pipe.execute()
    if fields[0] is None:
        return None
    record = {name: as_text(v) for name, v in zip(_FINGERPRINT_FIELDS, fields, strict=True) if v is not None}
    changed = progress_changed_at(record)
    stalled = is_stalled({"status": record.get("status"), "progress_changed_at": changed}, stall_seconds, time.time())
    return (*fields, leaves, ended, failed, stalled, *pacing)
