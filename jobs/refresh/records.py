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
from jobs.errors import RefreshNotFoundError, ValidationError
from jobs.observe.run_ended import run_ended_args, run_ended_keys
from jobs.owners import CLI_OWNER
from jobs.pacing import pace_fields, pace_view
from jobs.reconnect import refusal_of
from jobs.redis_values import as_text, as_text_map, as_texts
from jobs.refresh.progress import COUNTER_FIELDS, Counters
from jobs.scripts import Scripts
from jobs.statuses import ACTIVE as ACTIVE
from jobs.statuses import CANCELLED as CANCELLED
from jobs.statuses import FAILED as FAILED
from jobs.statuses import PENDING, RUNNING
from jobs.statuses import SUCCEEDED as SUCCEEDED
from jobs.statuses import TASK_STATUSES as STATUSES
from jobs.statuses import TERMINAL as TERMINAL
from jobs.upstream.base import Region
from jobs.upstream.identity import shown

SORT_FIELDS = ("created_at", "updated_at")
KINDS = ("full", "province")
LISTING_TTL = 10  # seconds a filtered listing's intersection may outlive a crash between its commands
_MAX_INDEX = 2**62  # Redis ranges are signed 64-bit

# Fields stored as JSON text in the record hash; everything else is a plain string.
_JSON_FIELDS = ("query", "result", "upstream", "provinces")
_INT_FIELDS = ("progress", "attempt")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def new_refresh_id() -> str:
    """`task_20261122_143052_5f3a9c`: sortable by creation, unique without coordination."""
    return f"task_{datetime.now(UTC):%Y%m%d_%H%M%S}_{secrets.token_hex(3)}"


def new_record(
    task_id: str, kind: str, label: str, query: str | None, upstream: dict[str, Any], timeout: int = 7200,
    owner: str = CLI_OWNER,
) -> dict[str, str]:
    now = datetime.now(UTC)
    return {
        "task_id": task_id,
        "kind": kind,
        "owner": owner,
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
    pipe.zadd(keys.tasks_of_kind(record["kind"]), {task_id: ts})
    owner = record.get("owner", CLI_OWNER)
    pipe.zadd(keys.tasks_of_owner(owner), {task_id: ts})
    pipe.zadd(keys.tasks_with_status_of_owner(PENDING, owner), {task_id: ts})


def _transition(
    client: redis.Redis | redis.client.Pipeline, task_id: str, allowed: Iterable[str], to: str,
    fields: dict[str, str] | None, kind: str, owner: str, at: float | None = None,
) -> Any:
    """Run transition.lua on `client` (at epoch `at`, default now): the task's kind and owner (which never
    change) name the indexes and the observe keys it may touch."""
    ts = datetime.now(UTC).timestamp() if at is None else at
    statuses = list(allowed)
    script_keys = [keys.task(task_id), keys.task_stats(task_id), keys.task_owners(task_id), keys.TASKS_BY_UPDATED,
                   *run_ended_keys(kind, ts), *keys.status_indexes([*statuses, to], owner)]
    iso = datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")
    args: list[Any] = [",".join(statuses), to, iso, ts, kind, owner, *run_ended_args()]
    for name, value in (fields or {}).items():
        args += [name, value]
    return Scripts(client).transition(keys=script_keys, args=args)


def transition(
    conn: redis.Redis, task_id: str, allowed: Iterable[str], to: str, fields: dict[str, str] | None = None
) -> bool:
    """Move a task to status `to` if its status is one of `allowed`; False if it is not."""
    kind, owner = conn.hmget(keys.task(task_id), ["kind", "owner"])
    outcome = _transition(conn, task_id, allowed, to, fields, as_text(kind or b"full"), as_text(owner or b""))
    if outcome is None:
        raise RefreshNotFoundError(f"no refresh task {task_id}")
    return bool(outcome == b"OK")


def queue_transition(
    pipe: redis.client.Pipeline, task_id: str, allowed: Iterable[str], to: str, fields: dict[str, str] | None = None,
    *, record: dict[str, str], at: float | None = None,
) -> None:
    """`transition` queued in the caller's MULTI, so other writes commit with it (its reply: b"OK" or why not).
    `record`: the task's record as read before (its kind and owner, which never change); `at`: epoch, default now."""
    _transition(pipe, task_id, allowed, to, fields, record.get("kind") or "full", record.get("owner") or "", at)


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
        raise RefreshNotFoundError(f"no refresh task {task_id}")
    return as_text_map(raw)


def status_dict(conn: redis.Redis, task_id: str) -> dict[str, Any]:
    """The status dictionary of the reference design, plus timing, attempts and failed regions."""
    with conn.pipeline(transaction=False) as pipe:
        _queue_status_reads(pipe, task_id)
        pipe.lpushx(keys.WRITES_PROBE, 0)  # stores nothing; refused while Redis refuses writes (jobs.reconnect)
        pipe.hmget(keys.UPSTREAM_PACE, pace_fields())
        *reads, probe, pace = pipe.execute(raise_on_error=False)
    for reply in (*reads, pace):
        if isinstance(reply, Exception):
            raise reply
    raw, stats, failed, conflicts, mismatches = reads
    if not raw:
        raise RefreshNotFoundError(f"no refresh task {task_id}")
    status = _to_status(raw, stats, failed, conflicts, mismatches)
    # Why an active task may not move: {reason, message}, or None.
    status["writes_refused"] = refusal_of(probe) if status["status"] in ACTIVE else None
    # The pacing of every worker's requests now (the same for every task): why a refresh may go slower.
    status["upstream_pacing"] = pace_view(pace)
    return status


# The counters a status dict shows, read by name: a dozen fields decoded instead of a hundred and more.
_STATUS_STATS = (*COUNTER_FIELDS, keys.CONFLICTS, keys.TOTAL_MISMATCHES)
_STATUS_READS = 5  # the replies _queue_status_reads queues, the arguments of _to_status


def _queue_status_reads(pipe: redis.client.Pipeline, task_id: str) -> None:
    pipe.hgetall(keys.task(task_id))
    pipe.hmget(keys.task_stats(task_id), _STATUS_STATS)
    pipe.hgetall(keys.task_failed_regions(task_id))
    pipe.hgetall(keys.task_conflicts(task_id))
    pipe.hgetall(keys.task_total_mismatches(task_id))


def _conflicts(stats: dict[str, str], examples: dict[bytes, bytes]) -> dict[str, Any]:
    """Hospital ids the upstream listed under two leaves: how many copies were dropped, and a few of them."""
    shown = [{"id": as_text(k), "leaves": as_text(v).split(",")} for k, v in sorted(examples.items())]
    return {"count": int(stats.get(keys.CONFLICTS, "0")), "examples": shown}


def _total_mismatches(stats: dict[str, str], examples: dict[bytes, bytes]) -> dict[str, Any]:
    """Leaves taken with a stale `total` (their listing, the same twice, held another number of ids): how many,
    and a few of them."""
    shown = []
    for leaf, said in sorted(examples.items()):
        total, _, listed = as_text(said).partition(",")
        shown.append({"leaf": as_text(leaf), "total": int(total), "listed": int(listed)})
    return {"count": int(stats.get(keys.TOTAL_MISMATCHES, "0")), "examples": shown}


def _to_status(
    raw: dict[bytes, bytes], stats: list[bytes | None], failed: dict[bytes, bytes], conflicts: dict[bytes, bytes],
    mismatches: dict[bytes, bytes],
) -> dict[str, Any]:
    r = as_text_map(raw)
    counters = {name: value.decode() for name, value in zip(_STATUS_STATS, stats, strict=True) if value is not None}
    eta = r.get("eta_seconds")
    return {
        "task_id": r["task_id"],
        "kind": r.get("kind"),
        # Records made before owners existed were all made from the command line.
        "owner": r.get("owner") or CLI_OWNER,
        "hospital_name": r.get("hospital_name"),
        "query": json.loads(r.get("query", "null")),
        # Which upstream the task is for: kind and URL (never credentials), the model, the sample's scale.
        "upstream": shown(json.loads(r["upstream"])) if r.get("upstream") else None,
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
        "total_mismatches": _total_mismatches(counters, mismatches),
        "attempt": int(r.get("attempt", "1")),
        "retry": json.loads(r["retry"]) if r.get("retry") else None,
        "soft_limit_exceeded_at": r.get("soft_limit_exceeded_at") or None,
        "progress_changed_at": progress_changed_at(r),
        "recovered": json.loads(r["recovered"]) if r.get("recovered") else [],  # jobs.duties.reconcile
    }


def progress_changed_at(r: dict[str, str]) -> str | None:
    """When the progress last grew, or this attempt started if later (a resumed task starts afresh)."""
    moved = r.get("progress_moved_ts")
    moved_iso = datetime.fromtimestamp(float(moved), UTC).isoformat(timespec="seconds") if moved else None
    started = r.get("attempt_started_at") or r.get("started_at") or None
    return max((t for t in (moved_iso, started) if t), default=None)


def is_stalled(status: dict[str, Any], stall_seconds: float, now: float) -> bool:
    """A RUNNING task whose progress has not moved for `stall_seconds` (REFRESHQ_STALL_SECONDS)."""
    changed = status.get("progress_changed_at")
    if status.get("status") != RUNNING or not changed:
        return False
    return now - datetime.fromisoformat(changed).timestamp() >= stall_seconds


def list_page(
    conn: redis.Redis,
    status: str | None = None,
    page: int = 1,
    page_size: int = 10,
    sort_by: str = "created_at",
    sort_order: str = "desc",
    kind: str | None = None,
    owner: str | None = None,
) -> dict[str, Any]:
    """One page of status dicts, read from the sorted-set indexes (O(log N + page size) for one filter;
    two or more intersect their indexes, O(size of the smallest))."""
    if sort_order not in ("asc", "desc"):
        raise ValidationError(f"sort order {sort_order!r} is not valid: expected asc or desc")
    if page < 1 or not 1 <= page_size <= 1000:
        raise ValidationError("page must be >= 1 and page size from 1 to 1000")
    if kind is not None and kind not in KINDS:
        raise ValidationError(f"unknown kind {kind!r}: expected one of {', '.join(KINDS)}")
    start = (page - 1) * page_size
    index, filters = _indexes_for(status, sort_by, kind, owner)
    total, ids = _page_of(conn, index, filters, min(start, _MAX_INDEX), page_size, sort_order == "desc")
    with conn.pipeline(transaction=False) as pipe:
        for task_id in ids:
            _queue_status_reads(pipe, task_id)
        replies = pipe.execute()
    items = [
        _to_status(*replies[i : i + _STATUS_READS]) for i in range(0, len(replies), _STATUS_READS) if replies[i]
    ]
    return {"items": items, "total": total, "page": page, "page_size": page_size}


def _page_of(
    conn: redis.Redis, index: str, filters: list[str], start: int, size: int, desc: bool
) -> tuple[int, list[str]]:
    """(total, ids of one page) of `index` narrowed to the members of every `filters` set, in index order."""
    with conn.pipeline(transaction=bool(filters)) as pipe:
        source = index
        if filters:
            # Scores from the sort index alone (weight 0 for the filters); deleted in the same MULTI.
            source = keys.tasks_listing(secrets.token_hex(8))
            pipe.zinterstore(source, {index: 1, **dict.fromkeys(filters, 0)}, aggregate="SUM")
            pipe.expire(source, LISTING_TTL)
        pipe.zcard(source)
        pipe.zrange(source, start, start + size - 1, desc=desc)
        if filters:
            pipe.unlink(source)
        replies = pipe.execute()
    offset = 2 if filters else 0
    return int(replies[offset]), as_texts(replies[offset + 1])


def _indexes_for(status: str | None, sort_by: str, kind: str | None, owner: str | None) -> tuple[str, list[str]]:
    """The index to page through and the indexes it must be narrowed by (the fewest that say it all)."""
    if sort_by not in SORT_FIELDS:
        raise ValidationError(f"cannot sort by {sort_by!r}: expected one of {', '.join(SORT_FIELDS)}")
    if status is not None and status not in STATUSES:
        raise ValidationError(f"unknown status {status!r}: expected one of {', '.join(STATUSES)}")
    by_created = sort_by == "created_at"
    narrowing: list[str] = []
    if owner is not None and status is not None:
        narrowing.append(keys.tasks_with_status_of_owner(status, owner))
        status = None
    elif owner is not None:
        narrowing.append(keys.tasks_of_owner(owner))
    if kind is not None:
        narrowing.append(keys.tasks_of_kind(kind))
    if status is not None:
        base = keys.tasks_with_status(status) if by_created else keys.tasks_with_status_by_updated(status)
    elif by_created and narrowing:
        return narrowing[0], narrowing[1:]  # scored by created_at already
    else:
        base = keys.TASKS_BY_CREATED if by_created else keys.TASKS_BY_UPDATED
    return base, narrowing


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


def unindex(pipe: redis.client.Pipeline, task_id: str, record: dict[str, str] | None = None) -> None:
    """Drop a task from every index (its kind's and owner's too, when its record is given)."""
    pipe.zrem(keys.TASKS_BY_CREATED, task_id)
    pipe.zrem(keys.TASKS_BY_UPDATED, task_id)
    owner = (record or {}).get("owner")
    for status in STATUSES:
        pipe.zrem(keys.tasks_with_status(status), task_id)
        pipe.zrem(keys.tasks_with_status_by_updated(status), task_id)
        if owner:
            pipe.zrem(keys.tasks_with_status_of_owner(status, owner), task_id)
    if record and record.get("kind"):
        pipe.zrem(keys.tasks_of_kind(record["kind"]), task_id)
    if owner:
        pipe.zrem(keys.tasks_of_owner(owner), task_id)
