"""The refresh job functions that RQ workers run: plan a task, refresh one province, finish the task.

A task fans out into one RQ job per province on the `refresh` queue, so every worker (on any
machine) helps. Each province job walks its region tree once (kept in Redis), fetches the
hospitals of every leaf not yet in the checkpoint, stages each leaf in one transaction together
with its checkpoint entry, and publishes the province when all its leaves are in. The job that
ends the last province finishes the task. Failed jobs are retried by the scheduler's sweeper
(jobs.duties.retries), not by RQ's `Retry`, so that failures are classified and backed off.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import redis
from rq import get_current_job
from rq.job import Job, JobStatus, Retry
from rq.serializers import JSONSerializer

from jobs import keys, limits, queues
from jobs.config import Settings
from jobs.errors import PermanentUpstreamError, TaskExecutionError
from jobs.observe.counters import UpstreamTally
from jobs.redis_values import as_text, as_text_map, as_texts
from jobs.refresh import published, records
from jobs.refresh.leaves import LeafRunner
from jobs.refresh.records import CANCELLED, FAILED, PENDING, RUNNING, SUCCEEDED
from jobs.refresh.walk import walk_province
from jobs.scripts import Scripts
from jobs.upstream import build_upstream
from jobs.upstream.base import Region, Upstream

log = logging.getLogger("refreshq.refresh")

# The job functions, by the dotted names RQ stores; jobs queued by the previous layout carry the old
# names, which still run (jobs/refresh/__init__.py) and are still recognised (the sets below).
PLAN_FUNC = "jobs.refresh.job.plan_task"
PROVINCE_FUNC = "jobs.refresh.job.refresh_province"
PLAN_FUNCS = frozenset({PLAN_FUNC, "jobs.refresh.plan_task"})
PROVINCE_FUNCS = frozenset({PROVINCE_FUNC, "jobs.refresh.refresh_province"})
REFRESH_FUNCS = PLAN_FUNCS | PROVINCE_FUNCS
RESULT_TTL = 7 * 24 * 3600
# Cancel-flag values: why a task was asked to stop.
BY_USER, BY_TIMEOUT = "user", "timeout"
# A job interrupted by a warm shutdown goes back to the front of its queue at once, however often that
# happens (RQ drops `enqueue_at_front` of a returned Retry; workers.RefreshqWorker honours it).
_REQUEUE = Retry(max=10_000, enqueue_at_front=True)
# How long a plan job waits for a province job that was parked (no running slot) to end before it
# re-enqueues its work; parked jobs end within milliseconds of parking.
PARKED_WAIT_SECONDS = 2.0
_LIVE = (JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED, JobStatus.DEFERRED)


def plan_job_options(task_id: str, settings: Settings, nonce: str = "") -> dict[str, Any]:
    """How a task's plan job is enqueued (by create, resume and the admission of waiting tasks)."""
    return {
        "job_id": f"{task_id}-plan{nonce}",
        "timeout": settings.task_timeout,
        "result_ttl": RESULT_TTL,
        "failure_ttl": RESULT_TTL,
        "description": f"refresh {task_id}: plan",
    }


def _context() -> tuple[redis.Redis, Settings, Job]:
    job = get_current_job()
    if job is None:
        raise TaskExecutionError("refresh functions run inside an RQ job")
    return job.connection, Settings.from_env(), job


@contextlib.contextmanager
def _upstream(conn: redis.Redis, record: dict[str, str], settings: Settings, job: Job) -> Iterator[Upstream]:
    """The task's upstream behind this job's gate, its requests counted; on the way out (however the job
    ends) its slots are given back and its last requests added to the counters."""
    worker = job.worker_name or os.environ.get("RQ_WORKER_ID", "")
    gate = limits.gate_for(conn, settings, limits.holder_id(job.id, worker, os.getpid()))
    spec = json.loads(record["upstream"])
    tally = UpstreamTally(conn, str(spec.get("kind")))
    upstream = build_upstream(spec, settings, request_gate=gate, count=tally)
    try:
        yield upstream
    finally:
        upstream.close()  # first: no request of this job can start once its slots are given back
        if gate is not None:
            gate.close()
        tally.flush()


def plan_task(task_id: str) -> dict[str, Any]:
    """Admit the task (within the global limit), list its provinces and enqueue their jobs."""
    conn, settings, job = _context()
    record = records.load_raw(conn, task_id)
    if record["status"] not in (PENDING, RUNNING):
        return {"skipped": record["status"]}
    if conn.exists(keys.task_cancel(task_id)):
        return {"cancelled": True}
    started = _start(conn, task_id, record, settings)
    if started != "OK":
        return {"waiting": started}
    provinces, refused = _provinces_of(conn, record, settings, job)
    conn.hset(keys.task(task_id), "provinces", json.dumps(provinces, ensure_ascii=False))
    conn.hset(keys.task_stats(task_id), "provinces_total", len(provinces))
    for province, error in refused:  # the last one to end finishes the task
        _record_failed_region(conn, task_id, province, error)
        end_province(conn, task_id, province["code"], f"failed: {error}")
    ended = set(as_texts(conn.hkeys(keys.task_provinces_ended(task_id))))
    todo = [p for p in provinces if p["code"] not in ended]
    _enqueue_provinces(conn, task_id, record.get("attempt", "1"), todo, settings)
    if not todo and not refused:
        finish_task(conn, task_id)
    return {"provinces": len(provinces), "enqueued": len(todo), "refused": [p["code"] for p, _ in refused]}


def _start(
    conn: redis.Redis, task_id: str, record: dict[str, str], settings: Settings, step: str = "正在获取省份列表"
) -> str:
    """Admit a PENDING task into RUNNING within the running-task limit (every way into RUNNING goes
    through here): "OK", "WAIT" (queued in order for a slot) or the status that stops it."""
    now = datetime.now(UTC)
    fields = {"current_step": step, "attempt_started_at": now.isoformat(timespec="seconds")}
    if not record.get("started_at"):
        fields["started_at"] = fields["attempt_started_at"]
    args: list[Any] = [settings.max_concurrent_tasks, fields["attempt_started_at"], now.timestamp(), keys.PREFIX]
    for name, value in fields.items():
        args += [name, value]
    outcome = as_text(Scripts(conn).start(keys=[keys.task(task_id), keys.TASKS_WAITING], args=args))
    if outcome == "WAIT":
        position = conn.zrank(keys.TASKS_WAITING, task_id)
        place = position + 1 if isinstance(position, int) else 1
        conn.hset(keys.task(task_id), "current_step", f"排队等待执行（第 {place} 位）")
    return outcome


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
        with _upstream(conn, record, settings, job) as upstream:
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


def _enqueue_provinces(
    conn: redis.Redis, task_id: str, attempt: str, provinces: list[Region], settings: Settings
) -> None:
    queue = queues.queue(conn, queues.REFRESH)
    job_ids = {p["code"]: f"{task_id}-p{p['code']}-{attempt}" for p in provinces}
    live = _live_jobs(conn, list(job_ids.values()))
    with conn.pipeline() as pipe:
        pipe.multi()  # RQ joins an explicit transaction instead of starting its own
        for province in provinces:
            job_id = job_ids[province["code"]]
            if job_id in live:
                continue  # this plan job is itself a re-run; the province job is already on its way
            queue.enqueue_call(
                PROVINCE_FUNC, args=[task_id, province["code"]], job_id=job_id, timeout=settings.task_timeout,
                result_ttl=RESULT_TTL, failure_ttl=RESULT_TTL,
                description=f"refresh {task_id}: {province['name']}", pipeline=pipe,
            )
            pipe.sadd(keys.task_jobs(task_id), job_id)
        pipe.execute()


def _live_jobs(conn: redis.Redis, job_ids: list[str]) -> set[str]:
    """The ids among `job_ids` of jobs still queued or running (one round trip for all of them). A job
    parked for want of a running slot is not live once it has ended, which it does at once."""
    jobs = Job.fetch_many(job_ids, connection=conn, serializer=JSONSerializer)
    live = {job for job in jobs if job is not None and job.get_status(refresh=False) in _LIVE}
    return {job.id for job in live if not (job.meta.get("parked") and _ends(job))}


def _ends(job: Job) -> bool:
    """Wait briefly for a parked job to end; False if its work-horse died first (the job then comes
    back as an abandoned one, and runs: its task is RUNNING again by then)."""
    deadline = time.monotonic() + PARKED_WAIT_SECONDS
    while job.get_status(refresh=True) in _LIVE:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def refresh_province(task_id: str, province_code: str) -> dict[str, Any] | Retry:
    """Refresh one province of a task from its checkpoint; publish it when every leaf is in."""
    conn, settings, job = _context()
    record = records.load_raw(conn, task_id)
    province = _find_province(record, province_code)
    if conn.exists(keys.task_cancel(task_id)) or record["status"] not in (PENDING, RUNNING):
        return _ended(conn, task_id, province_code, "cancelled")
    if record["status"] == PENDING:
        # Retried after its task went PENDING (waiting for this retry): the task runs again only if
        # admitted within the running-task limit, in order. Without a slot the job ends unrun (parked)
        # and the plan job of the task's admission re-enqueues the province (admit_waiting).
        admitted = _start(conn, task_id, record, settings, f"正在处理：{province['name']}")
        if admitted == "WAIT":
            return _park(job, task_id, province_code)
        if admitted != "OK":
            return _ended(conn, task_id, province_code, "cancelled")
    with _upstream(conn, record, settings, job) as upstream:
        try:
            leaves, refused = walk_province(conn, task_id, province, upstream, settings.job_concurrency)
            runner = LeafRunner(conn, task_id, record.get("kind", "full"), province, upstream, job)
            outcome = runner.run(leaves, settings.job_concurrency)
        except PermanentUpstreamError as exc:
            _record_failed_region(conn, task_id, province, str(exc))
            return _ended(conn, task_id, province_code, f"failed: {exc}")
    if outcome == "cancelled":
        return _ended(conn, task_id, province_code, "cancelled")
    if outcome == "interrupted":
        log.info("refresh: %s of %s checkpointed for a warm shutdown; requeued", province_code, task_id)
        return _REQUEUE
    refused += runner.failed_leaves
    if refused:
        return _ended(conn, task_id, province_code, f"failed: {_failed_text(conn, task_id, province_code, refused)}")
    count = published.publish(conn, province_code, task_id, province["name"])
    end_province(conn, task_id, province_code, "published", published=True)
    return {"province": province_code, "outcome": "published", "records": count}


def _park(job: Job, task_id: str, code: str) -> dict[str, Any]:
    job.meta["parked"] = True  # tells the admitting plan job that this one ends without running
    job.save_meta()  # type: ignore[no-untyped-call]
    log.info("refresh: %s of %s waits for a running slot; its plan job re-enqueues it when admitted", code, task_id)
    return {"province": code, "outcome": "waiting for a running slot"}


def _ended(conn: redis.Redis, task_id: str, code: str, outcome: str) -> dict[str, Any]:
    end_province(conn, task_id, code, outcome)
    return {"province": code, "outcome": outcome}


def _find_province(record: dict[str, str], code: str) -> Region:
    for province in json.loads(record.get("provinces") or "[]"):
        if province["code"] == code:
            return province  # type: ignore[no-any-return]
    raise TaskExecutionError(f"province {code} is not part of task {record['task_id']}")


def _failed_text(conn: redis.Redis, task_id: str, province_code: str, count: int) -> str:
    """'2 regions failed: 440104 越秀区, 440105 海珠区' -- the regions of one province the upstream failed."""
    details = {as_text(k): json.loads(v) for k, v in conn.hgetall(keys.task_failed_regions(task_id)).items()}
    names = [f"{code} {d['name']}" for code, d in sorted(details.items()) if d.get("province") == province_code]
    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
    return f"{count} region(s) failed: {', '.join(names[:5])}{more}"


def _record_failed_region(conn: redis.Redis, task_id: str, region: Region, error: str) -> None:
    detail = json.dumps({"name": region["name"], "level": region["level"], "error": error}, ensure_ascii=False)
    conn.hset(keys.task_failed_regions(task_id), region["code"], detail)


def end_province(conn: redis.Redis, task_id: str, code: str, outcome: str, published: bool = False) -> None:
    """Record, once, how a province's part ended; the last one to end finishes the task."""
    last = Scripts(conn).province_ended(
        keys=[keys.task_provinces_ended(task_id), keys.task_stats(task_id)],
        args=[code, outcome, "1" if published else "0"],
    )
    if last:
        finish_task(conn, task_id)


def finish_task(conn: redis.Redis, task_id: str) -> None:
    """Give the task its final status from how its provinces ended, then admit a waiting task."""
    outcomes = as_text_map(conn.hgetall(keys.task_provinces_ended(task_id)))
    now = records.now_iso()
    reason = conn.get(keys.task_cancel(task_id))
    active = (PENDING, RUNNING)
    if reason is not None and as_text(reason) == BY_TIMEOUT:
        limit = conn.hget(keys.task(task_id), "timeout_seconds")
        message = f"TaskTimeoutError: the task ran past its time limit of {as_text(limit or b'?')} s"
        records.transition(conn, task_id, active, FAILED,
                           {"finished_at": now, "error_message": message, "current_step": "任务超时"})
    elif reason is not None or "cancelled" in outcomes.values():
        records.transition(conn, task_id, active, CANCELLED, {"finished_at": now, "current_step": "已取消"})
    elif failed := {code: o for code, o in outcomes.items() if o.startswith("failed")}:
        message = f"{len(failed)} of {len(outcomes)} provinces failed: " + "; ".join(
            f"{code} {o.removeprefix('failed: ')}" for code, o in sorted(failed.items())
        )
        records.transition(conn, task_id, active, FAILED,
                           {"finished_at": now, "error_message": message[:2000], "current_step": "刷新失败"})
    else:
        _succeed(conn, task_id, outcomes, now)
    admit_waiting(conn)


def _succeed(conn: redis.Redis, task_id: str, outcomes: dict[str, str], now: str) -> None:
    """SUCCEEDED, in one transaction with what success implies: a full refresh unpublishes the provinces
    the upstream no longer lists (their data expires after the grace period of a replaced version), and
    the task's id index goes (no leaf of a succeeded task is ever staged again)."""
    stats = as_text_map(conn.hgetall(keys.task_stats(task_id)))
    record = records.load_raw(conn, task_id)
    listed = {p["code"] for p in json.loads(record.get("provinces") or "[]")}
    result: dict[str, Any] = {
        "provinces": len(outcomes),
        "hospitals": int(stats.get("hospitals_found", 0)),
        "leaves": int(stats.get("leaves_done", 0)),
        "conflicts": int(stats.get("conflicts", 0)),
    }
    gone: dict[str, tuple[str, list[str]]] = {}
    with conn.pipeline() as pipe:
        while True:
            try:
                pipe.watch(keys.PUBLISHED, keys.task(task_id))  # type: ignore[no-untyped-call]
                if pipe.hget(keys.task(task_id), "status") != RUNNING.encode():
                    return  # ended otherwise meanwhile (cancelled): nothing of success applies
                full = record.get("kind") == "full" and bool(listed)
                gone = published.unlisted_versions(pipe, listed) if full else {}
                if full:
                    result["unpublished"] = sorted(gone)
                pipe.multi()
                records.queue_transition(pipe, task_id, (RUNNING,), SUCCEEDED, {
                    "finished_at": now, "progress": "100", "current_step": "刷新完成",
                    "result": json.dumps(result, ensure_ascii=False), "retry": "",
                })
                published.unpublish(pipe, gone)
                pipe.delete(keys.task_ids(task_id))
                pipe.execute()
                break
            except redis.WatchError:
                continue
    if gone:
        log.info("refresh %s: unpublished %s, no longer listed by the upstream", task_id, ", ".join(gone))


def admit_waiting(conn: redis.Redis, settings: Settings | None = None) -> int:
    """Enqueue the plan job of the first waiting task if a running slot is free; return how many."""
    settings = settings or Settings.from_env()
    head = conn.zrange(keys.TASKS_WAITING, 0, 0)
    if not head or conn.zcard(keys.tasks_with_status(RUNNING)) >= settings.max_concurrent_tasks:
        return 0
    task_id = as_text(head[0])
    nonce = f"-w{int(datetime.now(UTC).timestamp() * 1000)}"
    options = plan_job_options(task_id, settings, nonce)
    # At most one nudge per waiting task every few seconds; its plan job admits it (or not) atomically.
    if not conn.set(keys.task_admission(task_id), "1", nx=True, ex=5):
        return 0
    queues.queue(conn, queues.REFRESH).enqueue_call(PLAN_FUNC, args=[task_id], **options)
    conn.sadd(keys.task_jobs(task_id), options["job_id"])
    return 1
