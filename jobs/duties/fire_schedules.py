"""The scheduler's schedule duty: install task defaults, then each tick enqueue the runs that are due.

rq-scheduler keeps the schedules (a template job each, and its next run in its scheduled-jobs ZSET)
but its own loop is not used: it ignores the JSON serializer, lets a slow job overlap itself, has no
misfire handling, and its lock is not owner-checked. Instead refreshq's scheduler process, which
already holds an owner-checked lock, calls `run_schedules` every second. Each due schedule is fired
in one WATCHed transaction (the run jobs, the next run time, the counters), so even two tickers that
both believe they are active enqueue every fire once.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from rq.exceptions import NoSuchJobError
from rq.job import Job

from jobs import keys
from jobs.config import Settings
from jobs.errors import RefreshqError, UnknownTaskError
from jobs.named import runs, schedules
from jobs.named.catalog import TaskCatalog, configured_tasks
from jobs.named.definitions import TaskDefinition
from jobs.named.schedules import JSONJob, Schedule, rq_scheduler, template_job_id
from jobs.named.triggers import FirePlan, plan_fires
from jobs.redis_values import as_text_map, as_texts
from jobs.statuses import is_live

log = logging.getLogger("refreshq.schedules")



@dataclass(frozen=True)
class Fired:
    """What one schedule did at one tick."""

    name: str
    job_ids: list[str]
    skipped: int = 0
    missed: int = 0
    coalesced: int = 0
    note: str = ""


def run_schedules(conn: redis.Redis, now: float | None = None, *, settings: Settings) -> None:
    """Scheduler duty: on the first active tick install defaults and repair templates, then fire what is due."""
    now = time.time() if now is None else now
    try:
        registry = configured_tasks(settings)
        if conn not in _started:
            start(conn, registry, now)
            _started.add(conn)
    except RefreshqError as exc:
        # A bad REFRESHQ_TASK_MODULES must not stop the scheduler's other duties (retries, limits);
        # it is logged once, and retried every tick in case the deployment is fixed.
        if str(exc) not in _reported:
            _reported.add(str(exc))
            log.error("schedules: cannot load the named tasks: %s", exc)
        return
    tick(conn, registry, now)


# Connections (one per scheduler) whose defaults were installed: once per scheduler start.
_started: weakref.WeakSet[redis.Redis] = weakref.WeakSet()
_reported: set[str] = set()


def start(conn: redis.Redis, registry: TaskCatalog, now: float) -> list[str]:
    """Install the tasks' default schedules (never over an operator's) and rebuild lost templates."""
    installed = [d.name for d in registry if d.schedule is not None and install_default(conn, d, now)]
    repair(conn, registry, now)
    if installed:
        log.info("schedules: installed task defaults: %s", ", ".join(installed))
    return installed


def repair(conn: redis.Redis, registry: TaskCatalog, now: float) -> list[str]:
    """Rebuild the rq-scheduler entry of every active schedule that lost it (a crash between two writes,
    or its template job deleted by hand); such a schedule would otherwise never fire again."""
    names = schedules.names(conn)
    with conn.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.zscore(keys.SCHEDULES_DUE, template_job_id(name))
            pipe.hget(keys.schedule(name), "paused")
        replies = pipe.execute()
    lost = [n for i, n in enumerate(names) if replies[2 * i] is None and replies[2 * i + 1] == b"0"]
    for name in lost:
        _repair(conn, registry, name, now)
    return lost


def install_default(conn: redis.Redis, definition: TaskDefinition, now: float) -> bool:
    """Add a task's default schedule if no schedule of that name exists and the operator did not remove it."""
    schedule = schedules.default_schedule(definition)
    assert schedule is not None
    with conn.pipeline() as pipe:
        try:
            pipe.watch(keys.schedule(schedule.name), keys.SCHEDULES_REMOVED)  # type: ignore[no-untyped-call]
            if pipe.exists(keys.schedule(schedule.name)) or pipe.sismember(keys.SCHEDULES_REMOVED, schedule.name):
                return False
            pipe.multi()
            pipe.hset(keys.schedule(schedule.name), mapping=schedule.fields() | {"created_at": _iso(now)})  # type: ignore[arg-type]
            pipe.sadd(keys.SCHEDULES, schedule.name)
            pipe.execute()
        except redis.WatchError:
            return False  # an operator wrote it meanwhile: theirs wins
    schedules.sync_template(conn, schedule, definition, now)
    return True


def _repair(conn: redis.Redis, registry: TaskCatalog, name: str, now: float) -> None:
    try:
        schedule = schedules.load(conn, name)
        if not schedule.paused:
            schedules.sync_template(conn, schedule, registry.get(schedule.task), now)
    except RefreshqError as exc:
        log.warning("schedules: cannot rebuild schedule %s: %s", name, exc)


def tick(conn: redis.Redis, registry: TaskCatalog, now: float) -> list[Fired]:
    """Fire every schedule due at `now` (epoch seconds: the tests pass their own clock)."""
    repair(conn, registry, now)
    fired: list[Fired] = []
    for template in rq_scheduler(conn).get_jobs(until=now):
        name = str(template.meta.get("schedule") or template.id)
        try:
            result = fire_due(conn, registry, name, template.id, now)
        except Exception:
            # One broken schedule must not stop the others (nor the scheduler's other duties).
            log.exception("schedules: firing %s failed", name)
            continue
        if result is not None:
            fired.append(result)
    return fired


def fire_due(conn: redis.Redis, registry: TaskCatalog, name: str, template_id: str, now: float) -> Fired | None:
    """Fire one schedule if it is (still) due; None if another ticker or an operator got there first."""
    with conn.pipeline() as pipe:
        try:
            pipe.watch(keys.SCHEDULES_DUE, keys.schedule(name), keys.schedule_runs(name))  # type: ignore[no-untyped-call]
            due = pipe.zscore(keys.SCHEDULES_DUE, template_id)
            if due is None or float(due) > now:
                return None
            raw = as_text_map(pipe.hgetall(keys.schedule(name)))
            if not raw:
                _drop_orphan(pipe, template_id)
                return None
            schedule = Schedule.from_fields(name, raw)
            if schedule.paused:  # paused between its two writes (the flag, then the due entry)
                pipe.multi()
                pipe.zrem(keys.SCHEDULES_DUE, template_id)
                pipe.execute()
                return None
            plan = plan_fires(schedule.trigger, float(due), now, schedule.misfire_grace_time, schedule.coalesce)
            return _apply(pipe, conn, registry, schedule, template_id, plan, now)
        except redis.WatchError:
            return None


def _apply(
    pipe: redis.client.Pipeline, conn: redis.Redis, registry: TaskCatalog, schedule: Schedule,
    template_id: str, plan: FirePlan, now: float,
) -> Fired:
    live, ended = _runs_of(conn, pipe, schedule.name)
    slots = max(0, schedule.max_instances - len(live))
    to_run = plan.run[-slots:] if slots else []
    skipped = len(plan.run) - len(to_run)
    try:
        registry.get(schedule.task)
        task_args = JSONJob.fetch(template_id, connection=conn).args  # what rq-scheduler stored to run
    except (UnknownTaskError, NoSuchJobError) as exc:
        note = f"error: {exc}"
        pipe.multi()
        pipe.zadd(keys.SCHEDULES_DUE, {template_id: plan.next_due})
        pipe.hset(keys.schedule(schedule.name), mapping={"last_fire_at": _iso(now), "last_fire": note})
        pipe.execute()
        return Fired(schedule.name, [], note=note)
    pipe.multi()
    job_ids = [_enqueue(pipe, conn, registry, schedule, task_args, fire) for fire in to_run]
    _bookkeep(pipe, schedule, template_id, plan, job_ids, ended, skipped, now)
    pipe.execute()
    fired = Fired(schedule.name, job_ids, skipped, plan.missed, plan.coalesced, _note(job_ids, skipped, plan))
    log.info("schedules: %s: %s", schedule.name, fired.note)
    return fired


def _runs_of(conn: redis.Redis, pipe: redis.client.Pipeline, name: str) -> tuple[list[str], list[str]]:
    """The schedule's runs still queued or running, and those that ended (to forget)."""
    ids = as_texts(pipe.smembers(keys.schedule_runs(name)))
    if not ids:
        return [], []
    with conn.pipeline(transaction=False) as reader:
        for job_id in ids:
            reader.hget(Job.key_for(job_id), "status")
        statuses = reader.execute()
    live = [i for i, s in zip(ids, statuses, strict=True) if is_live(s)]
    return live, [i for i in ids if i not in live]


def _enqueue(
    pipe: redis.client.Pipeline, conn: redis.Redis, registry: TaskCatalog, schedule: Schedule,
    task_args: Sequence[Any], fire: float,
) -> str:
    _name, args, kwargs = task_args
    meta = {"schedule": schedule.name, "fire_at": fire}
    # The registry of the scheduler's settings (configured_tasks) knows its modules; a hand-made one refuses.
    return runs.enqueue_task(conn, registry.get(schedule.task), args, kwargs, meta=meta, pipeline=pipe,
                             callbacks=schedules.CALLBACKS, modules=registry.modules or ())


def _bookkeep(
    pipe: redis.client.Pipeline, schedule: Schedule, template_id: str, plan: FirePlan,
    job_ids: list[str], ended: list[str], skipped: int, now: float,
) -> None:
    key = keys.schedule(schedule.name)
    pipe.zadd(keys.SCHEDULES_DUE, {template_id: plan.next_due})
    if job_ids:
        pipe.sadd(keys.schedule_runs(schedule.name), *job_ids)
        pipe.hset(key, mapping={"last_job_id": job_ids[-1], "last_run_status": ""})
    if ended:
        pipe.srem(keys.schedule_runs(schedule.name), *ended)
    pipe.hset(key, mapping={"last_fire_at": _iso(now), "last_fire": _note(job_ids, skipped, plan)})
    for counter, amount in (("runs", len(job_ids)), ("skipped", skipped), ("missed", plan.missed)):
        if amount:
            pipe.hincrby(key, counter, amount)


def _note(job_ids: list[str], skipped: int, plan: FirePlan) -> str:
    parts = [f"enqueued {', '.join(job_ids)}"] if job_ids else []
    if skipped:
        parts.append(f"skipped {skipped} (previous run still queued or running)")
    if plan.missed:
        parts.append(f"missed {plan.missed} (later than the misfire grace time)")
    if plan.coalesced:
        parts.append(f"coalesced {plan.coalesced + 1} missed fires into one")
    return "; ".join(parts) or "nothing to run"


def _drop_orphan(pipe: redis.client.Pipeline, template_id: str) -> None:
    """A due template without a schedule HASH (its removal was interrupted): finish removing it."""
    pipe.multi()
    pipe.zrem(keys.SCHEDULES_DUE, template_id)
    pipe.delete(JSONJob.key_for(template_id))
    pipe.execute()


def run_now(conn: redis.Redis, registry: TaskCatalog, name: str, now: float | None = None) -> Fired:
    """Fire a schedule once now (paused or not), leaving its next regular run alone; max_instances holds."""
    moment = time.time() if now is None else now
    for _ in range(10):
        result = _fire_now(conn, registry, name, moment)
        if result is not None:
            return result
    raise RefreshqError(f"schedule {name} kept changing while running it now; try again")


def _fire_now(conn: redis.Redis, registry: TaskCatalog, name: str, now: float) -> Fired | None:
    schedule = schedules.load(conn, name)
    registry.get(schedule.task)  # UnknownTaskError before anything is written
    with conn.pipeline() as pipe:
        try:
            pipe.watch(keys.schedule(name), keys.schedule_runs(name))  # type: ignore[no-untyped-call]
            live, ended = _runs_of(conn, pipe, name)
            if len(live) >= schedule.max_instances:
                note = f"skipped: {len(live)} run(s) still queued or running ({', '.join(live)})"
                return Fired(name, [], skipped=1, note=note)
            pipe.multi()
            job_id = _enqueue(pipe, conn, registry, schedule, [schedule.task, schedule.args, schedule.kwargs], now)
            pipe.sadd(keys.schedule_runs(name), job_id)
            if ended:
                pipe.srem(keys.schedule_runs(name), *ended)
            pipe.hset(keys.schedule(name), mapping={
                "last_job_id": job_id, "last_run_status": "", "last_fire_at": _iso(now),
                "last_fire": f"run now: enqueued {job_id}",
            })
            pipe.hincrby(keys.schedule(name), "runs", 1)
            pipe.execute()
            return Fired(name, [job_id], note=f"enqueued {job_id}")
        except redis.WatchError:
            return None


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")
