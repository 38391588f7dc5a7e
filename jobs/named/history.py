"""History of named tasks: one record per attempt, bounded per task by count and by age.

A task's records are a HASH of JSON (attempt id -> record) indexed by a ZSET of start times, so
listing a page and trimming the oldest are both O(log N). Every write trims, and the `cleanup` task
trims tasks that stopped running, so Redis never grows without end.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from jobs import keys
from jobs.errors import ValidationError
from jobs.observe import outcomes as observed_runs
from jobs.redis_values import as_text, as_texts
from jobs.scripts import Scripts
from jobs.statuses import FAILED, RUNNING, SUCCEEDED

log = logging.getLogger("refreshq.named")
LOST = "lost: the worker running it died or was stopped"

RESULT_CHARS = 500
_MAX_INDEX = 2**62  # beyond any sorted set's length, within Redis's signed 64-bit range arguments
TRACEBACK_CHARS = 8000

@dataclass(frozen=True)
class Bounds:
    """How much history a task keeps: at most `limit` records, none older than `days`."""

    limit: int = 100
    days: float = 30.0

    def cutoff(self, now: float) -> float:
        return now - self.days * 86400


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def attempt_id(job_id: str, attempt: int) -> str:
    return f"{job_id}#{attempt}"


def record_start(
    conn: redis.Redis, task: str, job_id: str, attempt: int, bounds: Bounds,
    trigger: str = "manual", now: float | None = None, queued_ts: float | None = None,
) -> str:
    """Store a RUNNING record for this attempt (and trim); return its attempt id. `queued_ts`: when the
    run was enqueued (its queue wait is kept apart from its run time)."""
    started = time.time() if now is None else now
    entry_id = attempt_id(job_id, attempt)
    wait = round(max(0.0, started - queued_ts), 3) if queued_ts is not None else None
    entry = {
        "id": entry_id, "task": task, "job_id": job_id, "attempt": attempt, "trigger": trigger,
        "status": RUNNING, "started_at": iso(started), "started_ts": started, "queue_wait_seconds": wait,
        "ended_at": None, "duration": None, "result": None, "error": None, "traceback": None,
    }
    with conn.pipeline() as pipe:
        pipe.hset(keys.history_entries(task), entry_id, json.dumps(entry, ensure_ascii=False))
        pipe.zadd(keys.history(task), {entry_id: started})
        pipe.sadd(keys.HISTORY_TASKS, task)
        pipe.execute()
    trim(conn, task, bounds, started)
    return entry_id


def record_end(
    conn: redis.Redis, task: str, entry_id: str, status: str, *, result: Any = None,
    error: str | None = None, traceback: str | None = None, retrying: bool = False, now: float | None = None,
) -> dict[str, Any] | None:
    """Complete a record with its outcome; returns it. None if it was trimmed away meanwhile, or if it no longer
    says RUNNING: the attempt was declared lost (its worker missed its heartbeats: dead, or only paused and
    now awake), and a late end must not overwrite that nor count the run twice."""

    def ending(entry: dict[str, Any]) -> None:
        ended = time.time() if now is None else now
        entry.update({
            "status": status, "ended_at": iso(ended), "ended_ts": ended,
            "duration": round(ended - float(entry["started_ts"]), 3),
            "result": summarize(result) if status == SUCCEEDED else None,
            "error": error, "traceback": (traceback or "")[-TRACEBACK_CHARS:] or None, "retrying": retrying,
        })

    ended, found = _end_running(conn, task, entry_id, ending, retrying)
    if found and ended is None:
        log.warning("history: %s ended after it was declared lost; its end is not recorded", entry_id)
        conn.hincrby(keys.METRIC_COUNTERS, "stale_writes|history", 1)
    return ended


def _end_running(
    conn: redis.Redis, task: str, entry_id: str, ending: Callable[[dict[str, Any]], None], retrying: bool
) -> tuple[dict[str, Any] | None, bool]:
    """End a record while it says RUNNING (WATCHed): `ending` fills its end in, and the record and the run's
    counters, histogram and outcome are written together. (the ended record or None, whether it was found)."""
    entries = keys.history_entries(task)
    with conn.pipeline() as pipe:
        while True:
            try:
                pipe.watch(entries)  # type: ignore[no-untyped-call]
                raw = pipe.hget(entries, entry_id)
                entry: dict[str, Any] = json.loads(raw) if raw is not None else {}
                if entry.get("status") != RUNNING:
                    pipe.reset()
                    return None, raw is not None
                ending(entry)
                pipe.multi()
                pipe.hset(entries, entry_id, json.dumps(entry, ensure_ascii=False))
                observed_runs.queue_named_run(pipe, entry, retrying)
                pipe.execute()
                return entry, True
            except redis.WatchError:
                continue


def entry(conn: redis.Redis, task: str, entry_id: str) -> dict[str, Any] | None:
    """One record (None if it was trimmed away)."""
    raw = conn.hget(keys.history_entries(task), entry_id)
    return json.loads(raw) if raw is not None else None


def summarize(result: Any) -> str:
    """A short JSON text of a result, for listing (the full value stays in RQ's result)."""
    text = json.dumps(result, ensure_ascii=False, default=repr)
    return text if len(text) <= RESULT_CHARS else text[: RESULT_CHARS - 3] + "..."


def trim(conn: redis.Redis, task: str, bounds: Bounds, now: float | None = None) -> int:
    """Apply the bounds now; returns how many records were dropped."""
    cutoff = bounds.cutoff(time.time() if now is None else now)
    trimmed = Scripts(conn).trim_history(
        keys=[keys.history(task), keys.history_entries(task)], args=[cutoff, bounds.limit]
    )
    return int(trimmed)


def page(conn: redis.Redis, task: str, limit: int = 20, offset: int = 0) -> tuple[int, list[dict[str, Any]]]:
    """(total, records) newest first; RUNNING records whose worker is gone are shown (and stored) as FAILED."""
    if offset < 0 or limit < 1:
        raise ValidationError(f"offset {offset} and limit {limit} are not valid: expected offset >= 0, limit >= 1")
    if offset + limit > _MAX_INDEX:  # Redis ranges are signed 64-bit: past the end of any history
        return int(conn.zcard(keys.history(task))), []
    with conn.pipeline(transaction=False) as pipe:
        pipe.zcard(keys.history(task))
        pipe.zrange(keys.history(task), offset, offset + limit - 1, desc=True)
        total, ids = pipe.execute()
    ids = as_texts(ids)
    raws = conn.hmget(keys.history_entries(task), ids) if ids else []
    entries = [json.loads(raw) for raw in raws if raw is not None]
    return int(total), [_repaired(conn, e) for e in entries]


def _repaired(conn: redis.Redis, entry: dict[str, Any]) -> dict[str, Any]:
    """A RUNNING record is true only while its job is started on that same attempt; else its worker died."""
    if entry["status"] != RUNNING:
        return entry
    status, meta_attempt = _job_state(conn, entry["job_id"])
    if status == JobStatus.STARTED and meta_attempt == entry["attempt"]:  # still running: this attempt's job
        return entry
    ended = dict(entry, status=FAILED, error="lost: the worker running it died or was stopped")
    written = Scripts(conn).end_if_running(
        keys=[keys.history_entries(entry["task"])], args=[entry["id"], json.dumps(ended, ensure_ascii=False)]
    )
    if written:
        return ended
    raw = conn.hget(keys.history_entries(entry["task"]), entry["id"])
    return json.loads(raw) if raw is not None else entry


def _job_state(conn: redis.Redis, job_id: str) -> tuple[str | None, int | None]:
    try:
        job = Job.fetch(job_id, connection=conn, serializer=JSONSerializer)
    except Exception:
        return None, None
    status = job.get_status(refresh=False)
    return (as_text(status.value) if status else None), job.meta.get("attempt")


def tasks_with_history(conn: redis.Redis) -> list[str]:
    return sorted(as_texts(conn.smembers(keys.HISTORY_TASKS)))


def note_lost_run(conn: redis.Redis, job: Job, ended_ts: float) -> bool:
    """A named run whose worker died (RQ's failure callback, AbandonedJobError): if its attempt's history
    record still says RUNNING, end it FAILED and record the run, in one transaction; False if it had ended."""
    task, attempt = job.meta.get("task"), job.meta.get("attempt")
    if not task or not attempt:
        return False
    return end_lost(conn, str(task), attempt_id(job.id, int(attempt)), ended_ts, LOST, bool(job.retries_left))


def end_lost(conn: redis.Redis, task: str, entry_id: str, ended_ts: float, error: str, retrying: bool = False) -> bool:
    """End a record that still says RUNNING as FAILED with `error` (its attempt was lost: its worker died, its
    job vanished), counting the run, in one transaction; False if it had ended (or is gone)."""

    def ending(entry: dict[str, Any]) -> None:
        started = float(entry.get("started_ts") or ended_ts)
        entry.update({"status": FAILED, "error": error, "ended_at": iso(ended_ts),
                      "ended_ts": ended_ts, "duration": round(max(0.0, ended_ts - started), 3)})

    return _end_running(conn, task, entry_id, ending, retrying)[0] is not None


def lost_run_handler(job: Job, exc_type: type[BaseException], exc_value: BaseException, tb: Any) -> bool:
    """An RQ exception handler (the worker's, and the scheduler's started-registry cleanup): a named run whose
    history record still says RUNNING when its job fails was lost with its worker or work-horse; end it
    FAILED and record the run. True: RQ's own handling goes on."""
    try:
        note_lost_run(job.connection, job, time.time())
    except redis.RedisError as exc:  # the history repairs the record when it is next read; only the count is lost
        log.warning("observe: could not record the lost run %s (%s)", job.id, exc)
    return True
