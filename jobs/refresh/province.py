"""The province job of a refresh task: walk the province once, fetch and stage its leaves, publish it.

Each province job walks its region tree once (kept in Redis), fetches the hospitals of every leaf not
yet in the checkpoint, stages each leaf in one transaction together with its checkpoint entry, and
publishes the province when all its leaves are in. The job that ends the last province finishes the task.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import redis
from rq.job import Job, Retry

from jobs import keys, limits
from jobs.config import Settings
from jobs.context import running_job
from jobs.errors import PermanentUpstreamError, StaleExecutionError, TaskExecutionError
from jobs.redis_values import as_text
from jobs.refresh import published, records
from jobs.refresh.fence import Fence, claim, guarded
from jobs.refresh.finish import end_province
from jobs.refresh.leaves import LeafRunner
from jobs.refresh.plan import job_holder
from jobs.refresh.walk import walk_province
from jobs.statuses import PENDING, RUNNING
from jobs.upstream import check_upstream, open_upstream
from jobs.upstream.base import Region

log = logging.getLogger("refreshq.refresh")

# A job interrupted by a warm shutdown goes back to the front of its queue at once, however often that
# happens (RQ drops `enqueue_at_front` of a returned Retry; workers.RefreshqWorker honours it).
_REQUEUE = Retry(max=10_000, enqueue_at_front=True)


def refresh_province(task_id: str, province_code: str) -> dict[str, Any] | Retry:
    """Refresh one province of a task from its checkpoint; publish it when every leaf is in. Every write is
    made while this execution owns the province (jobs.refresh.fence): one that was paused and finds its work
    taken over, or its task ended, stops without writing."""
    job, context = running_job()
    try:
        fence = claim(job.connection, job, context, task_id, province_code)
        return _refresh(job, context.settings, fence)
    except StaleExecutionError as exc:
        return {"province": province_code, "outcome": f"stopped: {exc}"}


def _refresh(job: Job, settings: Settings, fence: Fence) -> dict[str, Any] | Retry:
    conn, task_id, province_code = job.connection, fence.task_id, fence.unit
    record = records.load_raw(conn, task_id)
    province = _find_province(record, province_code)
    if conn.exists(keys.task_cancel(task_id)) or record["status"] not in (PENDING, RUNNING):
        return _ended(conn, settings, fence, "cancelled")
    check_upstream(record, settings)  # a worker configured for another upstream refuses the task
    if record["status"] == PENDING:
        # Retried after its task went PENDING (waiting for this retry): the task runs again only if
        # admitted within the running-task limit, in order. Without a slot the job ends unrun (parked)
        # and the plan job of the task's admission re-enqueues the province (admit_waiting).
        admitted = limits.start_refresh(conn, task_id, record, settings.limits.max_concurrent_tasks,
                                     f"正在处理：{province['name']}")
        if admitted == "WAIT":
            return _park(job, task_id, province_code)
        if admitted != "OK":
            return _ended(conn, settings, fence, "cancelled")
    with open_upstream(conn, json.loads(record["upstream"]), settings, job_holder(job)) as upstream:
        try:
            leaves, refused = walk_province(conn, task_id, province, upstream, settings.pacing.job_concurrency, fence)
            runner = LeafRunner(conn, task_id, record.get("kind", "full"), province, upstream, job, fence)
            outcome = runner.run(leaves, settings.pacing.job_concurrency)
        except PermanentUpstreamError as exc:
            error = str(exc)
            guarded(conn, fence, "region", lambda pipe: records.failed_region(pipe, task_id, province, error))
            return _ended(conn, settings, fence, f"failed: {error}")
    if outcome == "interrupted":
        log.info("refresh: %s of %s checkpointed for a warm shutdown; requeued", province_code, task_id)
        return _REQUEUE
    refused += runner.failed_leaves
    if outcome == "cancelled":
        return _ended(conn, settings, fence, "cancelled")
    if refused:
        return _ended(conn, settings, fence, f"failed: {_failed_text(conn, task_id, province_code, refused)}")
    publication = published.publish(conn, province_code, task_id, province["name"], fence)
    if publication.outcome == "ended":  # cancelled (or out of time) while its last leaves came in
        return _ended(conn, settings, fence, "cancelled")
    end_province(conn, task_id, province_code, publication.outcome, settings,
                 published=publication.outcome == "published", fence=fence)
    return {"province": province_code, "outcome": publication.outcome, "records": publication.records}


def _park(job: Job, task_id: str, code: str) -> dict[str, Any]:
    job.meta["parked"] = True  # tells the admitting plan job that this one ends without running
    job.save_meta()  # type: ignore[no-untyped-call]
    log.info("refresh: %s of %s waits for a running slot; its plan job re-enqueues it when admitted", code, task_id)
    return {"province": code, "outcome": "waiting for a running slot"}


def _ended(conn: redis.Redis, settings: Settings, fence: Fence, outcome: str) -> dict[str, Any]:
    end_province(conn, fence.task_id, fence.unit, outcome, settings, fence=fence)
    return {"province": fence.unit, "outcome": outcome}


def _find_province(record: dict[str, str], code: str) -> Region:
    for province in json.loads(record.get("provinces") or "[]"):
        if province["code"] == code:
            return province  # type: ignore[no-any-return]
    raise TaskExecutionError(f"province {code} is not part of refresh task {record['task_id']}")


def _failed_text(conn: redis.Redis, task_id: str, province_code: str, count: int) -> str:
    """'2 regions failed: 440104 越秀区, 440105 海珠区' -- the regions of one province the upstream failed."""
    details = {as_text(k): json.loads(v) for k, v in conn.hgetall(keys.task_failed_regions(task_id)).items()}
    names = [f"{code} {d['name']}" for code, d in sorted(details.items()) if d.get("province") == province_code]
    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
    return f"{count} region(s) failed: {', '.join(names[:5])}{more}"
