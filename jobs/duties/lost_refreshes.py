"""Refresh tasks whose work nothing will run any more, and taking that work up again (jobs.duties.reconcile).

A RUNNING or PENDING task moves on only through its jobs: its plan job (which admits it, lists its provinces
and enqueues one job per province) and its province jobs (the last one to end finishes it). A task whose
unfinished part has no job anywhere a worker will take it from (jobs.duties.whereabouts) is lost:
- a PENDING task with no job at all, or a RUNNING one whose provinces were never listed: its plan is lost,
  and a new plan job takes it up (it admits the task, skips the provinces that ended or whose job lives);
- a RUNNING task's unfinished province with no job: that province's job is enqueued again, under its id,
  and resumes from the checkpoint;
- a RUNNING task whose provinces all ended, with no job left to finish it: it is finished.
What has no job by design is not lost: a PENDING task waiting in line for a running slot (admission nudges
it), every province while a plan job lives (it enqueues them one by one), a job waiting in a failed
registry for the retry sweeper, in a worker's claims or running in a work-horse.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from rq.job import Job

from jobs import keys, queues
from jobs.config import Settings
from jobs.duties import whereabouts
from jobs.duties.whereabouts import JobState, Snapshot
from jobs.redis_values import as_text, as_texts
from jobs.refresh import records
from jobs.refresh.finish import finish_refresh
from jobs.refresh.job import PROVINCE_FUNC, enqueue_plan, province_job_id, province_job_options
from jobs.statuses import ACTIVE, PENDING
from jobs.upstream.base import Region

PLAN, PROVINCE, FINISH = "plan", "province", "finish"
# How many times one take-up retries when a watched key changed under it (then it waits for the next pass).
WATCH_TRIES = 3


@dataclass(frozen=True)
class Loss:
    """A task's part that nothing will run: its plan, one province, or its end."""

    task_id: str
    kind: str  # PLAN, PROVINCE or FINISH
    why: str
    province: Region | None = None
    attempt: str = "1"
    job_id: str = ""  # the job that will take it up (a plan's is chosen when it is enqueued)

    @property
    def key(self) -> tuple[str, str, str]:
        return self.task_id, self.kind, self.province["code"] if self.province else ""


def active_refreshes(conn: redis.Redis) -> list[str]:
    return records.ids_with_status(conn, ACTIVE)


def refresh_losses(conn: redis.Redis, task_id: str, snapshot: Snapshot) -> list[Loss]:
    """What of the task nothing will run (none while any plan job of it lives)."""
    with conn.pipeline(transaction=False) as pipe:
        pipe.hmget(keys.task(task_id), "status", "provinces", "attempt")
        pipe.zscore(keys.TASKS_WAITING, task_id)
        pipe.smembers(keys.task_jobs(task_id))
        pipe.hkeys(keys.task_provinces_ended(task_id))
        (status, provinces, attempt), waiting, job_ids, ended = pipe.execute()
    status = as_text(status or b"")
    if status not in ACTIVE or (status == PENDING and waiting is not None):
        return []
    attempt = as_text(attempt or b"1")
    states = whereabouts.read_states(conn, sorted(as_texts(job_ids)))
    found = whereabouts.places(conn, snapshot, states)
    live = [job_id for job_id, place in found.items() if place]
    if any(_plan_of(task_id, job_id) for job_id in live):
        return []
    if status == PENDING or not provinces:
        if live:
            return []  # a PENDING task's province job waits for a retry
        plans = [s for s in states if _plan_of(task_id, s.job_id)]
        return [Loss(task_id, PLAN, _why(plans[-1] if plans else None), attempt=attempt)]
    listed: list[Region] = json.loads(provinces)
    done = set(as_texts(ended))
    unfinished = [p for p in listed if p["code"] not in done]
    if not unfinished:
        return [] if live else [Loss(task_id, FINISH, "every province ended, and no job is left to finish it",
                                     attempt=attempt)]
    live_codes = {_province_of(task_id, job_id) for job_id in live}
    by_id = {s.job_id: s for s in states}
    return [
        Loss(task_id, PROVINCE, _why(by_id.get(province_job_id(task_id, p["code"], attempt))), p, attempt,
             province_job_id(task_id, p["code"], attempt))
        for p in unfinished if p["code"] not in live_codes
    ]


def _plan_of(task_id: str, job_id: str) -> bool:
    """Whether `job_id` is one of the task's plan jobs (jobs.refresh.job.plan_job_options)."""
    return job_id.startswith(f"{task_id}-plan")


def _province_of(task_id: str, job_id: str) -> str | None:
    """The province code of one of the task's province jobs (`<task>-p<code>-<attempt>`)."""
    match = re.fullmatch(re.escape(task_id) + r"-p(.+)-\d+", job_id)
    return match.group(1) if match else None


def _why(state: JobState | None) -> str:
    """Why nothing will run the job, in words for the log and the status dict."""
    if state is None:
        return "no job of it was ever enqueued"
    if state.status is None:
        return f"its job {state.job_id} is gone (deleted, or lost with a failover)"
    if state.status in ("queued", "created"):
        return f"its job {state.job_id} says {state.status} but is in no queue and claimed by no worker"
    if state.status in ("started", "failed", "scheduled", "deferred"):
        return f"its job {state.job_id} says {state.status} but is in no {state.status} registry and run by no worker"
    return f"its job {state.job_id} ended ({state.status}) without ending its part"


def still_lost(conn: redis.Redis, loss: Loss) -> bool:
    """Whether `loss` is still one of the task's losses, looked at afresh (inside the caller's WATCH)."""
    snapshot = whereabouts.read_snapshot(conn, queues.ALL_QUEUES)
    return any(again.key == loss.key for again in refresh_losses(conn, loss.task_id, snapshot))


def take_up(conn: redis.Redis, loss: Loss, settings: Settings, event: dict[str, Any], counter: str) -> str | None:
    """Run the lost part again, once: checked again in the transaction that enqueues it (WATCH), so a job
    that appeared meanwhile is never doubled; `event` goes into the task's `recovered` list and `counter`
    (a field of keys.METRIC_COUNTERS) grows, in the same transaction. Returns the job id enqueued ("" for a
    finish), or None when the loss is gone or the keys kept changing (the next pass looks again)."""
    if loss.kind == FINISH:
        if not still_lost(conn, loss):
            return None
        finish_refresh(conn, loss.task_id, settings)
        with conn.pipeline() as pipe:
            record(conn, pipe, loss.task_id, event, counter)
            pipe.execute()
        return ""
    # What changes when the part is taken up by anything else: a job enqueued for it (its hash, the task's
    # job set), its end, the task's status or place in line. Not the queue: it changes with every claim.
    watched = [keys.task(loss.task_id), keys.task_provinces_ended(loss.task_id), keys.task_jobs(loss.task_id),
               keys.TASKS_WAITING]
    if loss.job_id:
        watched.append(Job.key_for(loss.job_id))
    with conn.pipeline() as pipe:
        for _ in range(WATCH_TRIES):
            try:
                pipe.watch(*watched)  # type: ignore[no-untyped-call]
                if not still_lost(conn, loss):
                    return None
                pipe.multi()
                job_id = _enqueue(conn, pipe, loss, settings)
                record(conn, pipe, loss.task_id, {**event, "job_id": job_id}, counter)
                pipe.execute()
                return job_id
            except redis.WatchError:
                continue
    return None


def _enqueue(conn: redis.Redis, pipe: redis.client.Pipeline, loss: Loss, settings: Settings) -> str:
    if loss.kind == PLAN:
        nonce = f"-c{int(datetime.now(UTC).timestamp() * 1000)}"
        return enqueue_plan(conn, loss.task_id, settings, nonce=nonce, pipeline=pipe)
    assert loss.province is not None
    options = province_job_options(loss.task_id, loss.province, loss.attempt, settings)
    # A hash left by the lost job (queued in no queue, or ended without ending its part) goes: the job
    # starts afresh under the same id, so a plan job's look for it (enqueue_provinces) still finds it. It
    # goes to the front of the queue, where it was waiting (or running) before it was lost.
    pipe.delete(Job.key_for(loss.job_id))
    queues.queue(conn, queues.REFRESH).enqueue_call(PROVINCE_FUNC, pipeline=pipe, at_front=True, **options)
    pipe.sadd(keys.task_jobs(loss.task_id), loss.job_id)
    return loss.job_id


EVENTS_KEPT = 20


def record(conn: redis.Redis, pipe: redis.client.Pipeline, task_id: str, event: dict[str, Any], counter: str) -> None:
    """Queue in `pipe` the take-up's event, appended to the task's `recovered` list (the status dict shows the
    last EVENTS_KEPT), and its count. The list is read on `conn`: inside a WATCH of the task's record."""
    raw = conn.hget(keys.task(task_id), "recovered")
    events: list[dict[str, Any]] = [*(json.loads(raw) if raw else []), event][-EVENTS_KEPT:]
    pipe.hset(keys.task(task_id), "recovered", json.dumps(events, ensure_ascii=False))
    pipe.hincrby(keys.METRIC_COUNTERS, counter, 1)
