"""Schedules of named tasks, kept in Redis: add, remove, pause, resume, list.

A schedule is a HASH (the operator's settings, the last fire and run, counters) plus a *template*
job kept by rq-scheduler: its stored job (what to run, on which queue) and its next run time in
rq-scheduler's scheduled-jobs ZSET. The template is always rebuilt from the HASH, so whichever of two
concurrent writers finishes last leaves both consistent. The tick that fires due schedules is in
`jobs.duties.fire_schedules`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
from rq.job import Job
from rq_scheduler import Scheduler as RqScheduler

from jobs import keys
from jobs.errors import ScheduleError, ScheduleNotFoundError
from jobs.named.catalog import TaskCatalog
from jobs.named.definitions import TaskDefinition
from jobs.named.runs import RESULT_TTL, RUN_FUNC, RunCallbacks, check_arguments, failure_entry, success_entry
from jobs.named.triggers import DEFAULT_TIMEZONE, Trigger, check_run_options
from jobs.queues import BellQueue
from jobs.redis_values import as_text_map, as_texts
from jobs.rqseam import queue as rq_classes
from jobs.rqseam.queue import JSONJob as JSONJob  # rq-scheduler's jobs (jobs.duties.fire_schedules)
from jobs.scripts import Scripts
from jobs.statuses import FAILED, PENDING, QUEUED, SUCCEEDED, UNKNOWN, from_rq, is_live

OPERATOR, DEFAULT = "operator", "default"
_CONFIG_FIELDS = ("task", "cron", "interval", "timezone", "args", "kwargs", "max_instances", "misfire_grace_time",
                  "coalesce", "paused", "source")

class JSONQueue(rq_classes.JSONQueue, BellQueue):
    """An RQ queue that always uses the JSON serializer and JSONJob, whatever rq-scheduler passes (and
    rings the queue's bell, as every refreshq queue: jobs.queues)."""


class _RqScheduler(RqScheduler):  # type: ignore[misc]  # rq-scheduler ships no type hints
    # Never `run()`: refreshq's scheduler process drives the due-check itself (see jobs.duties.fire_schedules).
    scheduled_jobs_key = keys.SCHEDULES_DUE


def rq_scheduler(conn: redis.Redis) -> Any:
    """rq-scheduler over refreshq's due ZSET, creating and reading JSON jobs."""
    return _RqScheduler(connection=conn, job_class=JSONJob, queue_class=JSONQueue)


def template_job_id(name: str) -> str:
    return f"refreshq-schedule-{name}"


@dataclass(frozen=True)
class Schedule:
    """The operator's settings of one schedule (named after its task)."""

    name: str
    task: str
    trigger: Trigger
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    max_instances: int = 1
    misfire_grace_time: int = 300
    coalesce: bool = True
    paused: bool = False
    source: str = OPERATOR

    def fields(self) -> dict[str, str]:
        return {
            "task": self.task, "cron": self.trigger.cron or "", "interval": str(self.trigger.interval or ""),
            "timezone": self.trigger.timezone, "args": json.dumps(self.args, ensure_ascii=False),
            "kwargs": json.dumps(self.kwargs, ensure_ascii=False), "max_instances": str(self.max_instances),
            "misfire_grace_time": str(self.misfire_grace_time), "coalesce": "1" if self.coalesce else "0",
            "paused": "1" if self.paused else "0", "source": self.source,
        }

    @classmethod
    def from_fields(cls, name: str, f: Mapping[str, str]) -> Schedule:
        trigger = Trigger(f.get("cron") or None, int(f["interval"]) if f.get("interval") else None,
                          f.get("timezone") or DEFAULT_TIMEZONE)
        return cls(name, f["task"], trigger, json.loads(f.get("args") or "[]"), json.loads(f.get("kwargs") or "{}"),
                   int(f.get("max_instances") or 1), int(f.get("misfire_grace_time") or 300),
                   f.get("coalesce", "1") == "1", f.get("paused") == "1", f.get("source") or OPERATOR)


def make_schedule(
    registry: TaskCatalog, task: str, *, cron: str | None = None, interval: int | None = None,
    timezone: str = DEFAULT_TIMEZONE, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None,
    max_instances: int = 1, misfire_grace_time: int = 300, coalesce: bool = True, source: str = OPERATOR,
) -> Schedule:
    """A validated schedule of `task` (UnknownTaskError, ScheduleError, TaskArgumentsError); nothing stored."""
    definition = registry.get(task)
    trigger = Trigger(cron, interval, timezone)
    plain_args, plain_kwargs = check_arguments(definition, args, kwargs or {})
    check_run_options(max_instances, misfire_grace_time)
    return Schedule(task, task, trigger, plain_args, plain_kwargs, max_instances, misfire_grace_time, coalesce,
                    source=source)


def default_schedule(definition: TaskDefinition) -> Schedule | None:
    spec = definition.schedule
    if spec is None:
        return None
    return make_schedule(
        TaskCatalog([definition]), definition.name, cron=spec.cron, interval=spec.interval, timezone=spec.timezone,
        args=spec.args, kwargs=spec.kwargs, max_instances=spec.max_instances,
        misfire_grace_time=spec.misfire_grace_time, coalesce=spec.coalesce, source=DEFAULT,
    )


def save(conn: redis.Redis, schedule: Schedule, definition: TaskDefinition, now: float) -> float | None:
    """Store (or replace) a schedule, keeping its history of fires; returns its next run."""
    if not schedule.paused:
        _first_fire(schedule, now)  # a next run that cannot be computed is refused before anything is written
    stale = [k for k in ("cron", "interval") if not schedule.fields()[k]]
    with conn.pipeline() as pipe:
        pipe.hset(keys.schedule(schedule.name), mapping=schedule.fields() | {"updated_at": _iso(now)})  # type: ignore[arg-type]
        pipe.hsetnx(keys.schedule(schedule.name), "created_at", _iso(now))
        pipe.hdel(keys.schedule(schedule.name), *stale)
        pipe.sadd(keys.SCHEDULES, schedule.name)
        pipe.srem(keys.SCHEDULES_REMOVED, schedule.name)
        pipe.execute()
    return sync_template(conn, schedule, definition, now)


def sync_template(conn: redis.Redis, schedule: Schedule, definition: TaskDefinition, now: float) -> float | None:
    """(Re)build the rq-scheduler job of a schedule and its next run from now; a paused one has none."""
    scheduler = rq_scheduler(conn)
    job_id = template_job_id(schedule.name)
    if schedule.paused:
        scheduler.cancel(job_id)
        return None
    scheduler.schedule(
        _first_fire(schedule, now), RUN_FUNC, args=[schedule.task, schedule.args, schedule.kwargs],
        id=job_id, queue_name=definition.queue, timeout=definition.time_limit, result_ttl=RESULT_TTL,
        description=f"schedule {schedule.name}: task {schedule.task}",
        meta={"schedule": schedule.name, "trigger": schedule.trigger.describe()},
    )
    score = conn.zscore(keys.SCHEDULES_DUE, job_id)
    return float(score) if score is not None else None


def _first_fire(schedule: Schedule, now: float) -> datetime:
    try:
        return datetime.fromtimestamp(schedule.trigger.next_after(now), UTC)
    except (OverflowError, ValueError, OSError):
        raise ScheduleError(f"schedule {schedule.name}: its next run is out of range") from None


def load(conn: redis.Redis, name: str) -> Schedule:
    raw = conn.hgetall(keys.schedule(name))
    if not raw:
        raise ScheduleNotFoundError(f"no schedule {name!r}: see 'refreshq schedule list'")
    return Schedule.from_fields(name, as_text_map(raw))


def remove(conn: redis.Redis, name: str) -> None:
    """Delete a schedule; a task default of the same name is not installed again (the operator removed it)."""
    load(conn, name)
    with conn.pipeline() as pipe:
        pipe.zrem(keys.SCHEDULES_DUE, template_job_id(name))
        pipe.delete(keys.schedule(name), keys.schedule_runs(name), JSONJob.key_for(template_job_id(name)))
        pipe.srem(keys.SCHEDULES, name)
        pipe.sadd(keys.SCHEDULES_REMOVED, name)
        pipe.execute()


def set_paused(conn: redis.Redis, registry: TaskCatalog, name: str, paused: bool, now: float) -> float | None:
    """Pause (no fires; missed ones are not caught up) or resume (next fire counted from now)."""
    schedule = load(conn, name)
    conn.hset(keys.schedule(name), mapping={"paused": "1" if paused else "0", "updated_at": _iso(now)})
    updated = Schedule.from_fields(name, {**schedule.fields(), "paused": "1" if paused else "0"})
    return sync_template(conn, updated, registry.get(schedule.task), now)


def on_run_success(job: Job, connection: redis.Redis, _result: Any) -> None:
    """RQ success callback of a schedule's run."""
    note_run_ended(connection, job.meta, job.id, SUCCEEDED, success_entry(connection, job))


def on_run_failure(
    job: Job, connection: redis.Redis, exc_type: type[BaseException] | None = None,
    exc_value: BaseException | None = None, _tb: Any = None,
) -> None:
    """RQ failure callback of a schedule's run (also of one whose worker died)."""
    if (entry := failure_entry(job, exc_type, exc_value)) is not None:
        note_run_ended(connection, job.meta, job.id, FAILED, entry)


# Attached to every run a schedule fires (jobs.duties.fire_schedules).
CALLBACKS = RunCallbacks(f"{__name__}.on_run_success", f"{__name__}.on_run_failure")


def note_run_ended(
    conn: redis.Redis, meta: Mapping[str, Any], job_id: str, status: str, entry: Mapping[str, Any] | None
) -> None:
    """When a scheduled run ends: the schedule shows its outcome (if it is still the latest run)."""
    name = meta.get("schedule")
    if not name:
        return
    entry = entry or {}
    Scripts(conn).note_run(keys=[keys.schedule(str(name)), keys.schedule_runs(str(name))], args=[
        job_id, status, entry.get("ended_at") or "", entry.get("duration") or "", (entry.get("error") or "")[:500],
    ])


def names(conn: redis.Redis) -> list[str]:
    return sorted(as_texts(conn.smembers(keys.SCHEDULES)))


def describe(conn: redis.Redis, name: str) -> dict[str, Any]:
    """A schedule as `schedule list` shows it: trigger, next run, last fire and run, counters."""
    raw = as_text_map(conn.hgetall(keys.schedule(name)))
    if not raw:
        raise ScheduleNotFoundError(f"no schedule {name!r}")
    schedule = Schedule.from_fields(name, raw)
    score = conn.zscore(keys.SCHEDULES_DUE, template_job_id(name))
    return {
        "name": name, "task": schedule.task, "trigger": schedule.trigger.describe(), "kind": schedule.trigger.kind,
        "cron": schedule.trigger.cron, "interval": schedule.trigger.interval, "timezone": schedule.trigger.timezone,
        "args": schedule.args, "kwargs": schedule.kwargs, "paused": schedule.paused, "source": schedule.source,
        "max_instances": schedule.max_instances, "misfire_grace_time": schedule.misfire_grace_time,
        "coalesce": schedule.coalesce,
        "next_run": _local(float(score), schedule.trigger.timezone) if score is not None else None,
        "last_fire_at": _relocal(raw.get("last_fire_at"), schedule.trigger.timezone),
        "last_fire": raw.get("last_fire") or None,
        "last_job_id": raw.get("last_job_id") or None, "last_run_status": _last_status(conn, raw),
        "last_run_ended_at": _relocal(raw.get("last_run_ended_at"), schedule.trigger.timezone),
        "last_run_error": raw.get("last_run_error") or None,
        **{k: int(raw.get(k) or 0) for k in ("runs", "skipped", "missed", "succeeded", "failed")},
    }


def _last_status(conn: redis.Redis, raw: Mapping[str, str]) -> str | None:
    if raw.get("last_run_status") or not raw.get("last_job_id"):
        return raw.get("last_run_status") or None
    # Not ended yet (an ended run's status is written when it ends): queued (QUEUED), running, retrying...
    status = conn.hget(JSONJob.key_for(raw["last_job_id"]), "status")
    if not is_live(status):
        return UNKNOWN
    word = from_rq(status)
    return QUEUED if word == PENDING else word


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _local(ts: float, timezone: str) -> str:
    from zoneinfo import ZoneInfo

    return datetime.fromtimestamp(ts, ZoneInfo(timezone)).isoformat(timespec="seconds")


def _relocal(stored: str | None, timezone: str) -> str | None:
    """A stored UTC time shown in the schedule's timezone, like its next run."""
    return _local(datetime.fromisoformat(stored).timestamp(), timezone) if stored else None
