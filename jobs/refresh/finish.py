"""How a refresh task ends: each province's outcome is recorded once; the last one gives the task its status."""

from __future__ import annotations

import json
import logging
from typing import Any

import redis

from jobs import keys
from jobs.config import Settings
from jobs.redis_values import as_text, as_text_map
from jobs.refresh import published, records
from jobs.refresh.admit import admit_waiting
from jobs.refresh.fence import Fence, unfenced
from jobs.scripts import Scripts
from jobs.statuses import ACTIVE, CANCELLED, FAILED, RUNNING, SUCCEEDED

log = logging.getLogger("refreshq.refresh")

# Cancel-flag values (keys.task_cancel): why a task was asked to stop.
BY_USER, BY_TIMEOUT = "user", "timeout"
# A province's outcome when a task created later had published it first (counted as done).
SUPERSEDED = "superseded"


def end_province(
    conn: redis.Redis, task_id: str, code: str, outcome: str, settings: Settings, published: bool = False,
    fence: Fence | None = None,
) -> None:
    """Record, once, how a province's part ended, while `fence` holds (the execution recording it still owns
    its unit; none: an operator's or the sweeper's end); the last one to end finishes the task. Every claim on
    the province ends with it."""
    fence = fence or unfenced(task_id)
    last = Scripts(conn).province_ended(
        keys=[keys.task_provinces_ended(task_id), keys.task_stats(task_id), fence.owners, keys.METRIC_COUNTERS],
        args=[code, outcome, "1" if published else "0", *fence.args()],
    )
    if fence.checked(last, "end") == 1:
        finish_refresh(conn, task_id, settings)


def finish_refresh(conn: redis.Redis, task_id: str, settings: Settings) -> None:
    """Give the task its final status from how its provinces ended, then admit a waiting task."""
    outcomes = as_text_map(conn.hgetall(keys.task_provinces_ended(task_id)))
    now = records.now_iso()
    reason = conn.get(keys.task_cancel(task_id))
    if reason is not None and as_text(reason) == BY_TIMEOUT:
        limit = conn.hget(keys.task(task_id), "timeout_seconds")
        message = f"TaskTimeoutError: the task ran past its time limit of {as_text(limit or b'?')} s"
        records.transition(conn, task_id, ACTIVE, FAILED,
                           {"finished_at": now, "error_message": message, "current_step": "任务超时"})
    elif reason is not None or "cancelled" in outcomes.values():
        records.transition(conn, task_id, ACTIVE, CANCELLED, {"finished_at": now, "current_step": "已取消"})
    elif failed := {code: o for code, o in outcomes.items() if o.startswith("failed")}:
        message = f"{len(failed)} of {len(outcomes)} provinces failed: " + "; ".join(
            f"{code} {o.removeprefix('failed: ')}" for code, o in sorted(failed.items())
        )
        records.transition(conn, task_id, ACTIVE, FAILED,
                           {"finished_at": now, "error_message": message[:2000], "current_step": "刷新失败"})
    else:
        _succeed(conn, task_id, outcomes, now)
    admit_waiting(conn, settings)


def _succeed(conn: redis.Redis, task_id: str, outcomes: dict[str, str], now: str) -> None:
    """SUCCEEDED, in one transaction with what success implies: a full refresh unpublishes the provinces
    the upstream no longer lists (their data expires after the grace period of a replaced version), and
    the task's id index goes (no leaf of a succeeded task is ever staged again)."""
    stats = as_text_map(conn.hgetall(keys.task_stats(task_id)))
    record = records.load_raw(conn, task_id)
    listed = {p["code"] for p in json.loads(record.get("provinces") or "[]")}
    result: dict[str, Any] = {
        "provinces": len(outcomes),
        "hospitals": int(stats.get(keys.HOSPITALS_FOUND, 0)),
        "leaves": int(stats.get(keys.LEAVES_DONE, 0)),
        "conflicts": int(stats.get(keys.CONFLICTS, 0)),
        "total_mismatches": int(stats.get(keys.TOTAL_MISMATCHES, 0)),
    }
    superseded = sorted(code for code, outcome in outcomes.items() if outcome == SUPERSEDED)
    if superseded:  # a task created later published these first; this task's versions of them were dropped
        result["superseded"] = superseded
    gone: dict[str, tuple[str, list[str]]] = {}
    with conn.pipeline() as pipe:
        while True:
            try:
                pipe.watch(keys.PUBLISHED, keys.task(task_id))  # type: ignore[no-untyped-call]
                if pipe.hget(keys.task(task_id), "status") != RUNNING.encode():
                    return  # ended otherwise meanwhile (cancelled): nothing of success applies
                full = record.get("kind") == "full" and bool(listed)
                gone = published.unlisted_versions(pipe, listed, published.version_order(pipe, task_id)) if full else {}
                if full:
                    result["unpublished"] = sorted(gone)
                pipe.multi()
                records.queue_transition(pipe, task_id, (RUNNING,), SUCCEEDED, record=record, fields={
                    "finished_at": now, "progress": "100", "current_step": "刷新完成",
                    "result": json.dumps(result, ensure_ascii=False), "retry": "",
                })
                published.unpublish(pipe, gone)
                # A million ids in a set and strings: UNLINK frees them aside instead of in the transaction.
                pipe.unlink(keys.task_ids(task_id), keys.task_home_ids(task_id), keys.task_seen_ids(task_id))
                pipe.execute()
                break
            except redis.WatchError:
                continue
    if gone:
        log.info("refresh %s: unpublished %s, no longer listed by the upstream", task_id, ", ".join(gone))
