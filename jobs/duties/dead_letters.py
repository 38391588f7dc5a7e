"""The dead-letter registry: jobs the retry sweeper (jobs.duties.retries) gave up on, to list, inspect, retry
or purge (`refreshq failed`)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import redis
from rq.job import Job
from rq.serializers import JSONSerializer

from jobs import keys, queues
from jobs.config import Settings
from jobs.errors import TaskNotFoundError
from jobs.redis_values import as_text_map, as_texts
from jobs.refresh import records
from jobs.refresh.manager import SyncRefreshManager
from jobs.statuses import CANCELLED, FAILED


def _entry(raw: Mapping[Any, Any]) -> dict[str, Any]:
    """A stored entry as shown (CLI, API): its fields as text, the attempt count as a number."""
    entry: dict[str, Any] = as_text_map(raw)
    if "attempts" in entry:
        entry["attempts"] = int(entry["attempts"])
    return entry


def list_dead(conn: redis.Redis) -> list[dict[str, Any]]:
    return page(conn, 0, -1)[1]


def page(conn: redis.Redis, start: int, stop: int, newest_first: bool = False) -> tuple[int, list[dict[str, Any]]]:
    """(how many dead jobs, their entries from `start` to `stop` inclusive, in the order they were buried)."""
    with conn.pipeline(transaction=False) as pipe:
        pipe.zcard(keys.DEAD_LETTER)
        pipe.zrange(keys.DEAD_LETTER, start, stop, desc=newest_first)
        total, ids = pipe.execute()
    with conn.pipeline(transaction=False) as pipe:
        for job_id in as_texts(ids):
            pipe.hgetall(keys.dead_letter_entry(job_id))
        return int(total), [_entry(raw) for raw in pipe.execute() if raw]


def show_dead(conn: redis.Redis, job_id: str) -> dict[str, Any]:
    raw = conn.hgetall(keys.dead_letter_entry(job_id))
    if not raw:
        raise TaskNotFoundError(f"no dead job {job_id}")
    detail = _entry(raw)
    try:
        job = Job.fetch(job_id, connection=conn, serializer=JSONSerializer)
        result = job.latest_result()
        detail["args"] = job.args
        detail["traceback"] = getattr(result, "exc_string", None) if result is not None else None
    except Exception:
        detail["traceback"] = None
    return detail


def retry_dead(conn: redis.Redis, job_id: str, settings: Settings | None = None) -> str:
    """Run a dead job again; a refresh job resumes its task from the checkpoint. Returns what was done."""
    entry = as_text_map(conn.hgetall(keys.dead_letter_entry(job_id)))
    if not entry:
        raise TaskNotFoundError(f"no dead job {job_id}")
    task_id = entry.get("task_id")
    if task_id:
        status = records.load_raw(conn, task_id)["status"]
        if status in (FAILED, CANCELLED):
            SyncRefreshManager(settings, conn).resume_task(task_id)
        outcome = f"resumed task {task_id} from its checkpoint"
    else:
        job = Job.fetch(job_id, connection=conn, serializer=JSONSerializer)
        queues.queue(conn, job.origin).enqueue_job(job)
        outcome = f"requeued {job_id} on {job.origin}"
    _forget(conn, job_id)
    return outcome


def purge_dead(conn: redis.Redis) -> int:
    ids = as_texts(conn.zrange(keys.DEAD_LETTER, 0, -1))
    for job_id in ids:
        with contextlib.suppress(Exception):  # the RQ job may have expired already
            Job.fetch(job_id, connection=conn, serializer=JSONSerializer).delete()
        _forget(conn, job_id)
    return len(ids)


def _forget(conn: redis.Redis, job_id: str) -> None:
    with conn.pipeline() as pipe:
        pipe.zrem(keys.DEAD_LETTER, job_id)
        pipe.delete(keys.dead_letter_entry(job_id), keys.job_retry(job_id))
        pipe.execute()
