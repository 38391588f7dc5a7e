"""Task records: one hash per task, indexed by sorted sets so listing 100,000 tasks stays fast.

Records outlive RQ's job and result TTLs; only `cleanup` removes them.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import redis

from jobs import keys
from jobs.errors import TaskNotFoundError, ValidationError
from jobs.redis_values import as_text, as_text_map, as_texts
from jobs.refresh.progress import Counters
from jobs.scripts import Scripts
from jobs.statuses import ACTIVE as ACTIVE
from jobs.statuses import CANCELLED as CANCELLED
from jobs.statuses import FAILED as FAILED
from jobs.statuses import PENDING, RUNNING
from jobs.statuses import SUCCEEDED as SUCCEEDED
from jobs.statuses import TASK_STATUSES as STATUSES
from jobs.statuses import TERMINAL as TERMINAL
from jobs.upstream.base import Region

SORT_FIELDS = ("created_at", "updated_at")
_MAX_INDEX = 2**62  # Redis ranges are signed 64-bit

# Fields stored as JSON text in the record hash; everything else is a plain string.
_JSON_FIELDS = ("query", "result", "upstream", "provinces")
_INT_FIELDS = ("progress", "attempt")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def new_task_id() -> str:
    """`task_20261122_143052_5f3a9c`: sortable by creation, unique without coordination."""
    return f"task_{datetime.now(UTC):%Y%m%d_%H%M%S}_{secrets.token_hex(3)}"


def new_record(
    task_id: str, kind: str, label: str, query: str | None, upstream: dict[str, Any], timeout: int = 7200
) -> dict[str, str]:
    now = datetime.now(UTC)
    return {
        "task_id": task_id,
        "kind": kind,
        "hospital_name": label,
        "query": json.dumps(query, ensure_ascii=False),
        "status": PENDING,
        "progress": "0",
        "current_step": "等待执行",
        "created_at": now.isoformat(timespec="seconds"),
        "created_ts": repr(now.timestamp()),
        "updated_at": now.isoformat(timespec="seconds"),
        "upstream": json.dumps(upstream, ensure_ascii=False),
        "attempt": "1",
        "timeout_seconds": str(timeout),
    }


def add_record(pipe: redis.client.Pipeline, record: dict[str, str]) -> None:
    """Queue the commands that store a new record and index it (inside the caller's MULTI)."""
    task_id, ts = record["task_id"], float(record["created_ts"])
    pipe.hset(keys.task(task_id), mapping=dict(record))  # type: ignore[arg-type]
    pipe.zadd(keys.TASKS_BY_CREATED, {task_id: ts})
    pipe.zadd(keys.TASKS_BY_UPDATED, {task_id: ts})
    pipe.zadd(keys.tasks_with_status(PENDING), {task_id: ts})
    pipe.zadd(keys.tasks_with_status_by_updated(PENDING), {task_id: ts})


def _transition_args(allowed: Iterable[str], to: str, fields: dict[str, str] | None) -> list[Any]:
    now = datetime.now(UTC)
    args: list[Any] = [",".join(allowed), to, now.isoformat(timespec="seconds"), now.timestamp(), keys.PREFIX]
    for name, value in (fields or {}).items():
        args += [name, value]
    return args


def transition(
    conn: redis.Redis, task_id: str, allowed: Iterable[str], to: str, fields: dict[str, str] | None = None
) -> bool:
    """Move a task to status `to` if its status is one of `allowed`; False if it is not."""
    outcome = Scripts(conn).transition(keys=[keys.task(task_id)], args=_transition_args(allowed, to, fields))
    if outcome is None:
        raise TaskNotFoundError(f"no task {task_id}")
    return bool(outcome == b"OK")


def queue_transition(
    pipe: redis.client.Pipeline, task_id: str, allowed: Iterable[str], to: str, fields: dict[str, str] | None = None
) -> None:
    """`transition` queued in the caller's MULTI, so other writes commit with it (its reply: b"OK" or why not)."""
    Scripts(pipe).transition(keys=[keys.task(task_id)], args=_transition_args(allowed, to, fields))


def failed_region(
    target: redis.Redis | redis.client.Pipeline, task_id: str, region: Region, error: str, province: str | None = None
) -> None:
    """Record a region the upstream refused for good (the status dict's `failed_regions`)."""
    detail: dict[str, str] = {"name": region["name"], "level": region["level"], "error": error}
    if province is not None:
        detail["province"] = province
    target.hset(keys.task_failed_regions(task_id), region["code"], json.dumps(detail, ensure_ascii=False))


def load_raw(conn: redis.Redis, task_id: str) -> dict[str, str]:
    raw = conn.hgetall(keys.task(task_id))
    if not raw:
        raise TaskNotFoundError(f"no task {task_id}")
    return as_text_map(raw)


def status_dict(conn: redis.Redis, task_id: str) -> dict[str, Any]:
    """The status dictionary of the reference design, plus timing, attempts and failed regions."""
    with conn.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.task(task_id))
        pipe.hgetall(keys.task_stats(task_id))
        pipe.hgetall(keys.task_failed_regions(task_id))
        pipe.hgetall(keys.task_conflicts(task_id))
        raw, stats, failed, conflicts = pipe.execute()
    if not raw:
        raise TaskNotFoundError(f"no task {task_id}")
    return _to_status(raw, stats, failed, conflicts)


def _conflicts(stats: dict[str, str], examples: dict[bytes, bytes]) -> dict[str, Any]:
    """Hospital ids the upstream listed under two leaves: how many copies were dropped, and a few of them."""
    shown = [{"id": as_text(k), "leaves": as_text(v).split(",")} for k, v in sorted(examples.items())]
    return {"count": int(stats.get(keys.CONFLICTS, "0")), "examples": shown}


def _to_status(
    raw: dict[bytes, bytes], stats: dict[bytes, bytes], failed: dict[bytes, bytes], conflicts: dict[bytes, bytes]
) -> dict[str, Any]:
    r = as_text_map(raw)
    counters = as_text_map(stats)
    eta = r.get("eta_seconds")
    return {
        "task_id": r["task_id"],
        "kind": r.get("kind"),
        "hospital_name": r.get("hospital_name"),
        "query": json.loads(r.get("query", "null")),
        "status": r["status"],
        "progress": int(r.get("progress", "0")),
        "current_step": r.get("current_step"),
        "created_at": r.get("created_at"),
        "updated_at": r.get("updated_at"),
        "started_at": r.get("started_at"),
        "finished_at": r.get("finished_at"),
        "eta_seconds": int(eta) if eta not in (None, "", "None") and r["status"] == RUNNING else None,
        "result": json.loads(r["result"]) if r.get("result") else None,
        "error_message": r.get("error_message") or None,
        "statistics": Counters.from_hash(counters).statistics(),
        "failed_regions": [{"code": as_text(k), **json.loads(v)} for k, v in sorted(failed.items())],
        "conflicts": _conflicts(counters, conflicts),
        "attempt": int(r.get("attempt", "1")),
        "retry": json.loads(r["retry"]) if r.get("retry") else None,
        "soft_limit_exceeded_at": r.get("soft_limit_exceeded_at") or None,
    }


def list_page(
    conn: redis.Redis,
    status: str | None = None,
    page: int = 1,
    page_size: int = 10,
    sort_by: str = "created_at",
    sort_order: str = "desc",
) -> dict[str, Any]:
    """One page of status dicts, read from the sorted-set indexes (O(log N + page size))."""
    index = _index_for(status, sort_by)
    if sort_order not in ("asc", "desc"):
        raise ValidationError(f"sort order {sort_order!r} is not valid: expected asc or desc")
    if page < 1 or not 1 <= page_size <= 1000:
        raise ValidationError("page must be >= 1 and page size from 1 to 1000")
    start = (page - 1) * page_size
    if start > _MAX_INDEX:  # past the end of any index
        return {"items": [], "total": int(conn.zcard(index)), "page": page, "page_size": page_size}
    with conn.pipeline(transaction=False) as pipe:
        pipe.zcard(index)
        pipe.zrange(index, start, start + page_size - 1, desc=sort_order == "desc")
        total, ids = pipe.execute()
    with conn.pipeline(transaction=False) as pipe:
        for task_id in as_texts(ids):
            pipe.hgetall(keys.task(task_id))
            pipe.hgetall(keys.task_stats(task_id))
            pipe.hgetall(keys.task_failed_regions(task_id))
            pipe.hgetall(keys.task_conflicts(task_id))
        replies = pipe.execute()
    items = [
        _to_status(*replies[i : i + 4]) for i in range(0, len(replies), 4) if replies[i]
    ]
    return {"items": items, "total": int(total), "page": page, "page_size": page_size}


def _index_for(status: str | None, sort_by: str) -> str:
    if sort_by not in SORT_FIELDS:
        raise ValidationError(f"cannot sort by {sort_by!r}: expected one of {', '.join(SORT_FIELDS)}")
    if status is None:
        return keys.TASKS_BY_CREATED if sort_by == "created_at" else keys.TASKS_BY_UPDATED
    if status not in STATUSES:
        raise ValidationError(f"unknown status {status!r}: expected one of {', '.join(STATUSES)}")
    return keys.tasks_with_status(status) if sort_by == "created_at" else keys.tasks_with_status_by_updated(status)


def ids_with_status(conn: redis.Redis, statuses: Iterable[str]) -> list[str]:
    ids: list[str] = []
    for status in statuses:
        ids += as_texts(conn.zrange(keys.tasks_with_status(status), 0, -1))
    return ids


def ids_created_before(conn: redis.Redis, cutoff_ts: float, statuses: Iterable[str]) -> list[str]:
    ids: list[str] = []
    for status in statuses:
        ids += as_texts(conn.zrangebyscore(keys.tasks_with_status(status), "-inf", cutoff_ts))
    return ids


def unindex(pipe: redis.client.Pipeline, task_id: str) -> None:
    pipe.zrem(keys.TASKS_BY_CREATED, task_id)
    pipe.zrem(keys.TASKS_BY_UPDATED, task_id)
    for status in STATUSES:
        pipe.zrem(keys.tasks_with_status(status), task_id)
        pipe.zrem(keys.tasks_with_status_by_updated(status), task_id)
