"""Named-task runs whose job vanished, or sits where no worker will take it (jobs.duties.reconcile).

A run is its RQ job: the job's hash holds the task's name and arguments; the run's history record
(jobs.named.history, written when an attempt starts) and its schedule's runs (jobs.named.schedules) only
point at it by id. So:
- a run whose job's hash is gone (rq-dashboard's Delete, `Job.delete()`, a failover) and that no worker
  runs is ended FAILED, with an error that says so: in its history record if it had started, and on its
  schedule if one fired it. It is not run again: its arguments went with the job, and a named task, unlike
  a refresh, is not known to be safe to run twice (it may have been half done when its job vanished);
- a run whose job says queued but is in no queue and claimed by no worker is pushed back onto the front of
  its queue: its hash holds everything it needs, and it never started.
Runs looked at: those a schedule still counts as queued or running, and the RUNNING history records among
the newest of each task (a run that started long ago and still says RUNNING is repaired when its history
is read, jobs.named.history).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import redis
from rq.job import Job
from rq.serializers import JSONSerializer

from jobs import keys, queues
from jobs.duties import whereabouts
from jobs.duties.whereabouts import Snapshot
from jobs.named import history, schedules
from jobs.redis_values import as_text, as_texts
from jobs.statuses import FAILED, RUNNING

VANISHED = "lost: its job vanished (deleted, or lost with a failover); not run again, its arguments went with it"
# The newest history records of each task looked at for RUNNING ones whose job vanished.
RECENT = 20
# A schedule's run that vanished is looked for in its task's history under these attempts (#1, #2, ...).
ATTEMPTS_LOOKED_AT = 10


@dataclass(frozen=True)
class LostRun:
    job_id: str
    vanished: bool  # its hash is gone (else: it says queued but is in no queue)
    task: str = ""
    exec_id: str = ""  # its RUNNING history record, if it had started
    schedule: str = ""
    why: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        return "run", self.job_id, ""

    @property
    def kind(self) -> str:
        return "run"


def run_losses(conn: redis.Redis, snapshot: Snapshot) -> list[LostRun]:
    """The runs that vanished or sit in no queue."""
    known = {**_scheduled_runs(conn), **_running_records(conn)}
    if not known:
        return []
    states = whereabouts.read_states(conn, sorted(known))
    found = whereabouts.places(conn, snapshot, states)
    lost = []
    for state in states:
        if found[state.job_id]:
            continue
        run = known[state.job_id]
        if state.status is None:
            lost.append(LostRun(state.job_id, True, run.get("task", ""), run.get("exec_id", ""),
                                run.get("schedule", ""), "its job is gone"))
        elif state.status in ("queued", "created"):
            lost.append(LostRun(state.job_id, False, run.get("task", ""), schedule=run.get("schedule", ""),
                                why="its job says queued but is in no queue and claimed by no worker"))
    return lost


def _scheduled_runs(conn: redis.Redis) -> dict[str, dict[str, str]]:
    names = sorted(as_texts(conn.smembers(keys.SCHEDULES)))
    with conn.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.smembers(keys.schedule_runs(name))
            pipe.hget(keys.schedule(name), "task")
        replies = pipe.execute()
    runs: dict[str, dict[str, str]] = {}
    for name, ids, task in zip(names, replies[::2], replies[1::2], strict=True):
        for job_id in as_texts(ids):
            runs[job_id] = {"schedule": name, "task": as_text(task or b"")}
    return runs


def _running_records(conn: redis.Redis) -> dict[str, dict[str, str]]:
    tasks = sorted(as_texts(conn.smembers(keys.HISTORY_TASKS)))
    with conn.pipeline(transaction=False) as pipe:
        for task in tasks:
            pipe.zrange(keys.history(task), -RECENT, -1)
        newest = pipe.execute()
    with conn.pipeline(transaction=False) as pipe:
        for task, ids in zip(tasks, newest, strict=True):
            pipe.hmget(keys.history_entries(task), ids or ["-"])
        raws = pipe.execute()
    runs: dict[str, dict[str, str]] = {}
    for task, entries in zip(tasks, raws, strict=True):
        for raw in entries:
            entry = json.loads(raw) if raw else {}
            if entry.get("status") == RUNNING:
                trigger = str(entry.get("trigger") or "")
                runs[str(entry["job_id"])] = {"task": task, "exec_id": str(entry["id"]),
                                              "schedule": trigger.removeprefix("schedule ")
                                              if trigger.startswith("schedule ") else ""}
    return runs


def take_up(conn: redis.Redis, run: LostRun) -> str | None:
    """End a vanished run FAILED, or push one sitting in no queue back onto its queue. Returns what was
    done, or None when the run turned up meanwhile."""
    if not run.vanished:
        return "requeued" if _requeue(conn, run.job_id) else None
    if conn.exists(Job.key_for(run.job_id)):
        return None
    ended = time.time()
    exec_id = run.exec_id or _started_record(conn, run)
    if exec_id and not history.end_lost(conn, run.task, exec_id, ended, VANISHED):
        exec_id = ""  # it had ended meanwhile
    if run.schedule:
        schedules.note_run_ended(conn, {"schedule": run.schedule}, run.job_id, FAILED,
                                 {"error": VANISHED, "ended_at": history.iso(ended)})
    return "ended FAILED" if exec_id or run.schedule else None


def _started_record(conn: redis.Redis, run: LostRun) -> str:
    """The RUNNING history record of a scheduled run, if it had started (its attempts are numbered)."""
    if not run.task:
        return ""
    ids = [history.attempt_id(run.job_id, n) for n in range(1, ATTEMPTS_LOOKED_AT + 1)]
    for exec_id, raw in zip(ids, conn.hmget(keys.history_entries(run.task), ids), strict=True):
        if raw and json.loads(raw).get("status") == RUNNING:
            return exec_id
    return ""


def _requeue(conn: redis.Redis, job_id: str) -> bool:
    """Push a run that says queued, but is in no queue, back onto the front of its queue, checked again in
    the same transaction (WATCH), so that a run that turned up meanwhile is never queued twice."""
    try:
        job = Job.fetch(job_id, connection=conn, serializer=JSONSerializer)
    except Exception:  # gone meanwhile: the next pass sees it vanished
        return False
    queue = queues.queue(conn, job.origin)
    with conn.pipeline() as pipe:
        try:
            pipe.watch(Job.key_for(job_id), queue.key)  # type: ignore[no-untyped-call]
            snapshot = whereabouts.read_snapshot(conn, queues.ALL_QUEUES)
            [state] = whereabouts.read_states(conn, [job_id])
            if state.status not in ("queued", "created") or whereabouts.places(conn, snapshot, [state])[job_id]:
                return False
            pipe.multi()
            queue.enqueue_job(job, pipeline=pipe, at_front=True)
            pipe.execute()
            return True
        except redis.WatchError:
            return False
