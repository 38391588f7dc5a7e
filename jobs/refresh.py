"""The refresh job functions that RQ workers run: plan a task, refresh one province, finish the task.

A task fans out into one RQ job per province on the `refresh` queue, so every worker (on any
machine) helps. Each province job walks its region tree once (kept in Redis), fetches the
hospitals of every leaf not yet in the checkpoint, stages each leaf in one transaction together
with its checkpoint entry, and publishes the province when all its leaves are in. The job that
ends the last province finishes the task.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import redis
from rq import get_current_job
from rq.job import Callback, Job, JobStatus, Retry
from rq.serializers import JSONSerializer

from jobs import keys, queues, records, store
from jobs.config import Settings
from jobs.errors import PermanentUpstreamError, TaskExecutionError
from jobs.leaves import LeafRunner
from jobs.records import CANCELLED, FAILED, PENDING, RUNNING, SUCCEEDED
from jobs.redis_values import as_text_map, as_texts
from jobs.scripts import Scripts
from jobs.upstream import build_upstream
from jobs.upstream.base import Region
from jobs.walk import walk_province

log = logging.getLogger("refreshq.refresh")

PLAN_FUNC = "jobs.refresh.plan_task"
PROVINCE_FUNC = "jobs.refresh.refresh_province"
# A crashed or failed province job runs again (from its checkpoint) this many times.
PROVINCE_RETRIES = 3
RESULT_TTL = 7 * 24 * 3600


def plan_job_options(task_id: str, attempt: int, settings: Settings) -> dict[str, Any]:
    """How the plan job of an attempt is enqueued (shared by create and resume)."""
    return {
        "job_id": f"{task_id}-plan-{attempt}",
        "timeout": settings.task_timeout,
        "result_ttl": RESULT_TTL,
        "failure_ttl": RESULT_TTL,
        "retry": Retry(max=PROVINCE_RETRIES),
        "on_failure": Callback("jobs.refresh.on_plan_job_failed"),
        "description": f"refresh {task_id}: plan",
    }


def _conn() -> redis.Redis:
    job = get_current_job()
    assert job is not None, "refresh functions run inside an RQ job"
    return job.connection


def plan_task(task_id: str) -> dict[str, Any]:
    """List the provinces of the task and enqueue one job per province not yet finished."""
    conn, settings = _conn(), Settings.from_env()
    record = records.load_raw(conn, task_id)
    if record["status"] not in (PENDING, RUNNING):
        return {"skipped": record["status"]}
    fields = {"current_step": "正在获取省份列表"}
    if not record.get("started_at"):
        fields["started_at"] = records.now_iso()
    records.transition(conn, task_id, (PENDING, RUNNING), RUNNING, fields)
    if conn.exists(keys.task_cancel(task_id)):
        finish_task(conn, task_id)
        return {"cancelled": True}
    provinces = _provinces_of(record, settings)
    conn.hset(keys.task(task_id), "provinces", json.dumps(provinces, ensure_ascii=False))
    conn.hset(keys.task_stats(task_id), "provinces_total", len(provinces))
    ended = set(as_texts(conn.hkeys(keys.task_provinces_ended(task_id))))
    todo = [p for p in provinces if p["code"] not in ended]
    _enqueue_provinces(conn, task_id, int(record.get("attempt", "1")), todo, settings)
    if not todo:
        finish_task(conn, task_id)
    return {"provinces": len(provinces), "enqueued": len(todo)}


def _provinces_of(record: dict[str, str], settings: Settings) -> list[Region]:
    if record.get("provinces"):
        planned: list[Region] = json.loads(record["provinces"])
        return planned
    upstream = build_upstream(json.loads(record["upstream"]), settings)
    try:
        return upstream.provinces()
    finally:
        upstream.close()


def _enqueue_provinces(
    conn: redis.Redis, task_id: str, attempt: int, provinces: list[Region], settings: Settings
) -> None:
    queue = queues.queue(conn, queues.REFRESH)
    with conn.pipeline() as pipe:
        pipe.multi()
        for province in provinces:
            job_id = f"{task_id}-p{province['code']}-{attempt}"
            if _is_live(conn, job_id):
                continue  # this plan job is itself a re-run; the province job is already on its way
            queue.enqueue_call(
                PROVINCE_FUNC,
                args=[task_id, province["code"]],
                job_id=job_id,
                timeout=settings.task_timeout,
                result_ttl=RESULT_TTL,
                failure_ttl=RESULT_TTL,
                retry=Retry(max=PROVINCE_RETRIES),
                on_failure=Callback("jobs.refresh.on_province_job_failed"),
                description=f"refresh {task_id}: {province['name']}",
                pipeline=pipe,
            )
            pipe.sadd(keys.task_jobs(task_id), job_id)
        pipe.execute()


def _is_live(conn: redis.Redis, job_id: str) -> bool:
    try:
        status = Job.fetch(job_id, connection=conn, serializer=JSONSerializer).get_status()
    except Exception:
        return False
    return status in (JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED, JobStatus.DEFERRED)


def refresh_province(task_id: str, province_code: str) -> dict[str, Any]:
    """Refresh one province of a task from its checkpoint; publish it when every leaf is in."""
    conn, settings = _conn(), Settings.from_env()
    record = records.load_raw(conn, task_id)
    province = _find_province(record, province_code)
    if record["status"] != RUNNING or conn.exists(keys.task_cancel(task_id)):
        end_province(conn, task_id, province_code, "cancelled")
        return {"province": province_code, "outcome": "cancelled"}
    upstream = build_upstream(json.loads(record["upstream"]), settings)
    try:
        leaves, refused = walk_province(conn, task_id, province, upstream, settings.upstream_concurrency)
        runner = LeafRunner(conn, task_id, record.get("kind", "full"), province, upstream, get_current_job())
        outcome = runner.run(leaves, settings.upstream_concurrency)
    except PermanentUpstreamError as exc:
        _record_failed_region(conn, task_id, province, str(exc))
        end_province(conn, task_id, province_code, f"failed: {exc}")
        return {"province": province_code, "outcome": "failed"}
    finally:
        upstream.close()
    if outcome == "cancelled":
        end_province(conn, task_id, province_code, "cancelled")
        return {"province": province_code, "outcome": "cancelled"}
    refused += runner.failed_leaves
    if refused:
        end_province(conn, task_id, province_code, f"failed: {refused} regions refused by the upstream")
        return {"province": province_code, "outcome": "failed"}
    count = store.publish(conn, province_code, task_id, province["name"])
    end_province(conn, task_id, province_code, "published", published=True)
    return {"province": province_code, "outcome": "published", "records": count}


def _find_province(record: dict[str, str], code: str) -> Region:
    for province in json.loads(record.get("provinces") or "[]"):
        if province["code"] == code:
            return province  # type: ignore[no-any-return]
    raise TaskExecutionError(f"province {code} is not part of task {record['task_id']}")


def _record_failed_region(conn: redis.Redis, task_id: str, region: Region, error: str) -> None:
    detail = json.dumps({"name": region["name"], "level": region["level"], "error": error}, ensure_ascii=False)
    conn.hset(keys.task_failed_regions(task_id), region["code"], detail)


def end_province(conn: redis.Redis, task_id: str, code: str, outcome: str, published: bool = False) -> None:
    """Record, once, how a province's part ended; the last one to end finishes the task."""
    scripts = Scripts(conn)
    ended = scripts.province_ended(
        keys=[keys.task_provinces_ended(task_id), keys.task_stats(task_id)],
        args=[code, outcome, "1" if published else "0"],
    )
    total = int(conn.hget(keys.task_stats(task_id), "provinces_total") or 0)
    if int(ended) >= total:
        finish_task(conn, task_id)


def finish_task(conn: redis.Redis, task_id: str) -> None:
    """Give the task its final status from how its provinces ended."""
    outcomes = as_text_map(conn.hgetall(keys.task_provinces_ended(task_id)))
    now = records.now_iso()
    if conn.exists(keys.task_cancel(task_id)) or "cancelled" in outcomes.values():
        records.transition(conn, task_id, (RUNNING,), CANCELLED, {"finished_at": now, "current_step": "已取消"})
        return
    failed = {code: o for code, o in outcomes.items() if o.startswith("failed")}
    if failed:
        message = f"{len(failed)} of {len(outcomes)} provinces failed: " + "; ".join(
            f"{code} {o.removeprefix('failed: ')}" for code, o in sorted(failed.items())
        )
        records.transition(
            conn, task_id, (RUNNING,), FAILED,
            {"finished_at": now, "error_message": message[:2000], "current_step": "刷新失败"},
        )
        return
    stats = conn.hgetall(keys.task_stats(task_id))
    result = {
        "provinces": len(outcomes),
        "hospitals": int(stats.get(b"hospitals_found", 0)),
        "leaves": int(stats.get(b"leaves_done", 0)),
    }
    records.transition(
        conn, task_id, (RUNNING,), SUCCEEDED,
        {"finished_at": now, "progress": "100", "current_step": "刷新完成", "result": json.dumps(result)},
    )


def on_province_job_failed(job: Job, connection: redis.Redis, exc_type: type, exc: BaseException, tb: Any) -> None:
    """RQ failure callback: once a province job has no retries left, its province has failed."""
    if job.retries_left:
        return  # RQ runs it again; the checkpoint keeps what was done
    task_id, code = job.args[0], job.args[1]
    end_province(connection, task_id, code, f"failed: {type(exc).__name__}: {exc}"[:500])


def on_plan_job_failed(job: Job, connection: redis.Redis, exc_type: type, exc: BaseException, tb: Any) -> None:
    """RQ failure callback: a plan job out of retries fails its task."""
    if job.retries_left:
        return
    records.transition(
        connection, job.args[0], (PENDING, RUNNING), FAILED,
        {"finished_at": records.now_iso(), "error_message": f"{type(exc).__name__}: {exc}"[:2000]},
    )
