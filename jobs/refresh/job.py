"""How the refresh engine's RQ jobs are named and enqueued: a task's plan job, then one job per province.

A task fans out into one RQ job per province on the `refresh` queue, so every worker (on any machine)
helps. Failed jobs are retried by the scheduler's sweeper (jobs.duties.retries), not by RQ's `Retry`, so
that failures are classified and backed off.
"""

from __future__ import annotations

import time
from typing import Any

import redis
from rq.job import Job
from rq.serializers import JSONSerializer

from jobs import keys, queues
from jobs.config import Settings
from jobs.refresh.fence import Fence, guarded, unfenced
from jobs.statuses import is_live
from jobs.upstream.base import Region

# The job functions, by the dotted names RQ stores.
PLAN_FUNC = "jobs.refresh.plan.plan_refresh"
PROVINCE_FUNC = "jobs.refresh.province.refresh_province"
PLAN_FUNCS = frozenset({PLAN_FUNC})
PROVINCE_FUNCS = frozenset({PROVINCE_FUNC})
REFRESH_FUNCS = PLAN_FUNCS | PROVINCE_FUNCS
RESULT_TTL = 7 * 24 * 3600
# How long a plan job waits for a province job that was parked (no running slot) to end before it
# re-enqueues its work; parked jobs end within milliseconds of parking.
PARKED_WAIT_SECONDS = 2.0


def plan_job_options(task_id: str, settings: Settings, nonce: str = "") -> dict[str, Any]:
    """How a task's plan job is enqueued (by create, resume and the admission of waiting tasks)."""
    return {
        "job_id": f"{task_id}-plan{nonce}",
        "timeout": settings.limits.task_timeout,
        "result_ttl": RESULT_TTL,
        "failure_ttl": RESULT_TTL,
        "description": f"refresh {task_id}: plan",
    }


def enqueue_plan(
    conn: redis.Redis, task_id: str, settings: Settings, nonce: str = "", pipeline: redis.client.Pipeline | None = None
) -> str:
    """Enqueue the task's plan job (in the caller's MULTI when `pipeline` is given); return its id."""
    options = plan_job_options(task_id, settings, nonce)
    queues.queue(conn, queues.REFRESH).enqueue_call(PLAN_FUNC, args=[task_id], pipeline=pipeline, **options)
    (pipeline or conn).sadd(keys.task_jobs(task_id), options["job_id"])
    return str(options["job_id"])


def province_job_id(task_id: str, code: str, attempt: str) -> str:
    return f"{task_id}-p{code}-{attempt}"


def province_job_options(task_id: str, province: Region, attempt: str, settings: Settings) -> dict[str, Any]:
    """How a province job is enqueued (by the plan job, and by the reconciler: jobs.duties.reconcile)."""
    return {
        "args": [task_id, province["code"]],
        "job_id": province_job_id(task_id, province["code"], attempt),
        "timeout": settings.limits.task_timeout,
        "result_ttl": RESULT_TTL,
        "failure_ttl": RESULT_TTL,
        "description": f"refresh {task_id}: {province['name']}",
    }


def enqueue_provinces(
    conn: redis.Redis, task_id: str, attempt: str, provinces: list[Region], settings: Settings,
    fence: Fence | None = None,
) -> None:
    """One job per province, in one transaction made while `fence` (the plan job's claim) holds; a province
    whose job is still on its way is skipped."""
    queue = queues.queue(conn, queues.REFRESH)
    job_ids = {p["code"]: province_job_id(task_id, p["code"], attempt) for p in provinces}
    live = live_jobs(conn, list(job_ids.values()))

    def enqueue(pipe: redis.client.Pipeline) -> None:  # in MULTI: RQ joins it instead of starting its own
        for province in provinces:
            job_id = job_ids[province["code"]]
            if job_id in live:
                continue  # this plan job is itself a re-run; the province job is already on its way
            options = province_job_options(task_id, province, attempt, settings)
            queue.enqueue_call(PROVINCE_FUNC, pipeline=pipe, **options)
            pipe.sadd(keys.task_jobs(task_id), job_id)

    guarded(conn, fence or unfenced(task_id), "enqueue", enqueue)


def live_jobs(conn: redis.Redis, job_ids: list[str]) -> set[str]:
    """The ids among `job_ids` of jobs still queued or running (one round trip for all of them). A job
    parked for want of a running slot is not live once it has ended, which it does at once."""
    jobs = Job.fetch_many(job_ids, connection=conn, serializer=JSONSerializer)
    live = {job for job in jobs if job is not None and is_live(job.get_status(refresh=False))}
    return {job.id for job in live if not (job.meta.get("parked") and _ends(job))}


def _ends(job: Job) -> bool:
    """Wait briefly for a parked job to end; False if its work-horse died first (the job then comes
    back as an abandoned one, and runs: its task is RUNNING again by then)."""
    deadline = time.monotonic() + PARKED_WAIT_SECONDS
    while is_live(job.get_status(refresh=True)):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
