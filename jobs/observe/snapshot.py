"""The system as it is now, read in three pipelined round trips whatever the number of task records: tasks
by status, running tasks, queues (depth, age of the job at the head), workers (by state, which queues have
a live one), RQ's registries, the dead letters, the scheduler's heartbeat and Redis' memory.

A worker is live while RQ's key for it exists (RQ renews it while the worker runs and deletes it when the
worker stops cleanly; a worker killed with SIGKILL stays listed until the key's TTL lapses).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
from rq import Queue, Worker
from rq.job import Job
from rq.registry import (
    CanceledJobRegistry,
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from rq.utils import utcparse

from jobs import keys, queues
from jobs.redis_values import as_text, as_texts
from jobs.statuses import PENDING, RUNNING, TASK_STATUSES

REGISTRIES = {
    "started": StartedJobRegistry, "failed": FailedJobRegistry, "finished": FinishedJobRegistry,
    "deferred": DeferredJobRegistry, "scheduled": ScheduledJobRegistry, "canceled": CanceledJobRegistry,
}
SERVING_STATES = ("idle", "busy", "started")
# Running tasks detailed (every one up to this; they are bounded by REFRESHQ_MAX_CONCURRENT_TASKS) and
# pending ones (the oldest first).
MAX_RUNNING_SHOWN = 100
MAX_PENDING_SHOWN = 20
_TASK_FIELDS = ("kind", "status", "progress", "current_step", "hospital_name", "created_ts", "run_started_ts",
                "attempt_started_at", "progress_moved_ts", "eta_seconds", "run_hospitals_start", "queue_wait_seconds")


@dataclass(frozen=True)
class QueueState:
    name: str
    depth: int
    head_age: float | None  # seconds the job at the head (the next one taken) has waited; None: empty
    live_workers: int


@dataclass(frozen=True)
class RefreshRow:
    """A running or pending task, as the reports show it."""

    task_id: str
    fields: dict[str, str]
    hospitals: int

    def number(self, name: str) -> float | None:
        value = self.fields.get(name)
        try:
            return float(value) if value not in (None, "", "None") else None
        except ValueError:
            return None

    def running_seconds(self, now: float) -> float | None:
        started = self.number("run_started_ts")
        return max(0.0, now - started) if started is not None and self.fields.get("status") == RUNNING else None

    def stalled_since(self) -> float | None:
        """When its progress last grew, or the current attempt started if later (None: not running)."""
        if self.fields.get("status") != RUNNING:
            return None
        marks = [self.number("progress_moved_ts"), self.number("run_started_ts")]
        attempt = self.fields.get("attempt_started_at")
        if attempt:
            marks.append(datetime.fromisoformat(attempt).timestamp())
        known = [m for m in marks if m is not None]
        return max(known) if known else None

    def as_active(self, now: float) -> dict[str, Any]:
        running = self.running_seconds(now)
        created = self.number("created_ts")
        records = self.hospitals - int(self.number("run_hospitals_start") or 0)
        eta = self.number("eta_seconds")
        return {
            "task_id": self.task_id, "kind": self.fields.get("kind"), "label": self.fields.get("hospital_name"),
            "status": self.fields.get("status"), "progress": int(self.number("progress") or 0),
            "current_step": self.fields.get("current_step"),
            "running_seconds": round(running, 1) if running is not None else None,
            "waiting_seconds": round(now - created, 1) if running is None and created is not None else None,
            "queue_wait_seconds": self.number("queue_wait_seconds"),
            "hospitals_found": self.hospitals,
            "records_per_second": round(records / running, 2) if running else None,
            "eta_seconds": int(eta) if eta is not None and running is not None else None,
        }


@dataclass
class Snapshot:
    now: float
    tasks_by_status: dict[str, int]
    running: list[RefreshRow]
    pending: list[RefreshRow]
    queues: list[QueueState]
    workers_by_state: dict[str, int]
    dead_letters: int
    scheduler_beat: float | None  # epoch of the active scheduler's last tick; None: none within 60 s
    memory_used: int
    memory_max: int  # 0: no maxmemory
    registries: dict[tuple[str, str], int] = field(default_factory=dict)  # (queue, registry) -> jobs


def _first_round(pipe: redis.client.Pipeline, with_registries: bool) -> None:
    for status in TASK_STATUSES:
        pipe.zcard(keys.tasks_with_status(status))
    pipe.zrange(keys.tasks_with_status(RUNNING), 0, MAX_RUNNING_SHOWN - 1)
    pipe.zrange(keys.tasks_with_status(PENDING), 0, MAX_PENDING_SHOWN - 1)
    for name in queues.ALL_QUEUES:
        key = Queue.redis_queue_namespace_prefix + name
        pipe.llen(key)
        pipe.lindex(key, 0)
    pipe.smembers(Worker.redis_workers_keys)
    pipe.zcard(keys.DEAD_LETTER)
    pipe.get(keys.SCHEDULER_HEARTBEAT)
    if with_registries:
        for name in queues.ALL_QUEUES:
            for registry in REGISTRIES.values():
                pipe.zcard(registry.key_template.format(name))


def take(conn: redis.Redis, with_registries: bool = False, with_memory: bool = True) -> Snapshot:
    """Read the snapshot (`with_registries`: RQ's registries too, for /metrics)."""
    now = datetime.now(UTC).timestamp()
    with conn.pipeline(transaction=False) as pipe:
        _first_round(pipe, with_registries)
        first = iter(pipe.execute())
    by_status = {status: int(next(first)) for status in TASK_STATUSES}
    running_ids, pending_ids = as_texts(next(first)), as_texts(next(first))
    depth_heads = [(int(next(first)), next(first)) for _ in queues.ALL_QUEUES]
    worker_keys = sorted(as_texts(next(first)))
    dead, beat = int(next(first)), next(first)
    registries = {(q, r): int(next(first)) for q in queues.ALL_QUEUES for r in REGISTRIES} if with_registries else {}
    with conn.pipeline(transaction=False) as pipe:
        for task_id in running_ids + pending_ids:
            pipe.hmget(keys.task(task_id), _TASK_FIELDS)
            pipe.hget(keys.task_stats(task_id), "hospitals_found")
        for _depth, head in depth_heads:
            pipe.hget(Job.key_for(as_text(head)) if head else "refreshq:none", "enqueued_at")
        for key in worker_keys:
            pipe.hmget(key, "state", "queues")
        second = iter(pipe.execute())
    rows = [_row(task_id, next(second), next(second)) for task_id in running_ids + pending_ids]
    heads = [next(second) for _ in depth_heads]
    workers = [next(second) for _ in worker_keys]
    memory = conn.info("memory") if with_memory else {}
    return Snapshot(
        now=now, tasks_by_status=by_status, running=rows[: len(running_ids)], pending=rows[len(running_ids):],
        queues=_queue_states(now, depth_heads, heads, workers),
        workers_by_state=_by_state(workers), dead_letters=dead, scheduler_beat=_beat(beat),
        memory_used=int(memory.get("used_memory", 0)), memory_max=int(memory.get("maxmemory", 0)),
        registries=registries,
    )


def _row(task_id: str, values: list[bytes | None], hospitals: bytes | None) -> RefreshRow:
    fields = {name: as_text(v) for name, v in zip(_TASK_FIELDS, values, strict=True) if v is not None}
    return RefreshRow(task_id, fields, int(hospitals or 0))


def _queue_states(
    now: float, depth_heads: list[tuple[int, Any]], heads: list[Any], workers: list[list[bytes | None]]
) -> list[QueueState]:
    serving: dict[str, int] = {}
    for state, names in workers:
        if state is not None and as_text(state) in SERVING_STATES:
            for name in as_text(names or b"").split(","):
                serving[name] = serving.get(name, 0) + 1
    states = []
    for name, (depth, _head), enqueued in zip(queues.ALL_QUEUES, depth_heads, heads, strict=True):
        age = now - utcparse(as_text(enqueued)).timestamp() if depth and enqueued else None
        states.append(QueueState(name, depth, max(0.0, age) if age is not None else None, serving.get(name, 0)))
    return states


def _by_state(workers: list[list[bytes | None]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for state, _names in workers:
        if state is not None:  # None: its key is gone (it stopped; RQ drops it from the set later)
            counts[as_text(state)] = counts.get(as_text(state), 0) + 1
    return counts


def _beat(raw: bytes | None) -> float | None:
    if raw is None:
        return None
    try:
        return datetime.fromisoformat(as_text(raw)).timestamp()
    except ValueError:
        return None
