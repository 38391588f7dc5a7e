"""The plan job of a refresh task: admit it (within the running-task limit), list its provinces, enqueue them."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis
from rq.job import Job

from jobs import keys, limits, shutdown
from jobs.config import Settings
from jobs.context import running_job
from jobs.errors import PermanentUpstreamError, StaleExecutionError
from jobs.redis_values import as_texts
from jobs.refresh import records
from jobs.refresh.fence import PLAN, Fence, claim, guarded
from jobs.refresh.finish import end_province, finish_refresh
from jobs.refresh.job import enqueue_provinces
from jobs.refresh.leaves import CANCEL_POLL_SECONDS
from jobs.refresh.prewalk import prewalk
from jobs.statuses import PENDING, RUNNING
from jobs.upstream import check_upstream, open_upstream
from jobs.upstream.base import Region


def plan_refresh(task_id: str) -> dict[str, Any]:
    """Admit the task (within the global limit), list its provinces and enqueue their jobs: while this execution
    owns the task's plan (jobs.refresh.fence; a paused one that finds it taken over, or the task ended, stops)."""
    job, context = running_job()
    try:
        fence = claim(job.connection, job, context, task_id, PLAN)
        return _plan(job, context.settings, fence)
    except StaleExecutionError as exc:
        return {"stopped": str(exc)}


def _plan(job: Job, settings: Settings, fence: Fence) -> dict[str, Any]:
    conn, task_id = job.connection, fence.task_id
    record = records.load_raw(conn, task_id)
    if record["status"] not in (PENDING, RUNNING):
        return {"skipped": record["status"]}
    if conn.exists(keys.task_cancel(task_id)):
        return {"cancelled": True}
    check_upstream(record, settings)  # a worker configured for another upstream refuses the task
    started = limits.start_refresh(conn, task_id, record, settings.limits.max_concurrent_tasks, "正在获取省份列表")
    if started != "OK":
        return {"waiting": started}
    provinces, refused = _provinces_of(conn, record, settings, job)

    def planned(pipe: redis.client.Pipeline) -> None:
        pipe.hset(keys.task(task_id), "provinces", json.dumps(provinces, ensure_ascii=False))
        pipe.hset(keys.task_stats(task_id), keys.PROVINCES_TOTAL, len(provinces))
        for province, error in refused:
            records.failed_region(pipe, task_id, province, error)

    guarded(conn, fence, "plan", planned)
    for province, error in refused:  # the last one to end finishes the task
        end_province(conn, task_id, province["code"], f"failed: {error}", settings, fence=fence)
    ended = set(as_texts(conn.hkeys(keys.task_provinces_ended(task_id))))
    todo = [p for p in provinces if p["code"] not in ended]
    if len(todo) > 1:
        _prewalk(conn, record, todo, settings, job, fence)
    else:
        enqueue_provinces(conn, task_id, record.get("attempt", "1"), todo, settings, fence)
    if not todo and not refused:
        finish_refresh(conn, task_id, settings)
    return {"provinces": len(provinces), "enqueued": len(todo), "refused": [p["code"] for p, _ in refused]}


def _prewalk(
    conn: redis.Redis, record: dict[str, str], todo: list[Region], settings: Settings, job: Job, fence: Fence
) -> None:
    """Enqueue each province job as soon as the province is walked (jobs.refresh.prewalk), every one of
    them whatever happens: the task ends when every planned province has ended."""
    task_id, attempt = fence.task_id, record.get("attempt", "1")
    handed: set[str] = set()

    def ready(province: Region) -> None:
        enqueue_provinces(conn, task_id, attempt, [province], settings, fence)
        handed.add(province["code"])

    checked = [0.0, False]  # when the cancel flag was last read, and what it said

    def stop() -> bool:  # asked before every request: the flag is read at most every CANCEL_POLL_SECONDS
        if not checked[1] and time.monotonic() - float(checked[0]) >= CANCEL_POLL_SECONDS:
            checked[:] = [time.monotonic(), bool(conn.exists(keys.task_cancel(task_id)))]
        return shutdown.requested.is_set() or bool(checked[1])

    try:
        with open_upstream(conn, json.loads(record["upstream"]), settings, job_holder(job)) as upstream:
            prewalk(conn, task_id, todo, upstream, settings.pacing.job_concurrency, ready, stop, fence)
    finally:
        enqueue_provinces(conn, task_id, attempt, [p for p in todo if p["code"] not in handed], settings, fence)


def job_holder(job: Job) -> str:
    """The upstream-gate holder of one execution of a refresh job (see limits.holder_id)."""
    return limits.holder_id(job.id, job.worker_name or os.environ.get("RQ_WORKER_ID", ""), os.getpid())


def _provinces_of(
    conn: redis.Redis, record: dict[str, str], settings: Settings, job: Job
) -> tuple[list[Region], list[tuple[Region, str]]]:
    """The task's provinces, and those of them that cannot be refreshed, with why.

    A full refresh lists them now (and keeps the list for its resumes); a province refresh asks again
    whether its province is still listed, since it may have gone since the task was created.
    """
    planned: list[Region] | None = json.loads(record["provinces"]) if record.get("provinces") else None
    if planned is not None and record.get("kind") != "province":
        return planned, []
    try:
        with open_upstream(conn, json.loads(record["upstream"]), settings, job_holder(job)) as upstream:
            listed = upstream.provinces()
    except PermanentUpstreamError as exc:
        if planned is None:
            raise
        return planned, [(p, str(exc)) for p in planned]  # refused (401, 404...): as a failed walk would be
    if planned is None:
        return listed, []
    codes = {p["code"] for p in listed}
    gone = "province {name} ({code}) is no longer listed by the upstream"
    return planned, [(p, gone.format(**p)) for p in planned if p["code"] not in codes]
