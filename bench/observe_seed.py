"""Refresh tasks taken through their life at chosen times, by the real task-status scripts (start,
progress, transition: jobs/scripts/*.lua), so every index, counter, hourly sum and run list is what a real run leaves:
the records the observability bench and tests measure against."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

import redis

from jobs import keys, limits
from jobs.refresh import records
from jobs.scripts import Scripts
from jobs.statuses import ACTIVE, FAILED, RUNNING, SUCCEEDED

SPEC = {"kind": "http", "url": "http://127.0.0.1:9/v1"}  # never contacted


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class FakeRun:
    """One task: created, maybe started (then `hospitals` found), maybe ended with `status`."""

    task_id: str
    kind: str
    created: float
    started: float | None = None
    ended: float | None = None
    status: str = SUCCEEDED
    hospitals: int = 0
    province: str = "110000"
    progress: int = 0


def queue_fake_run(pipe: redis.client.Pipeline, run: FakeRun) -> None:
    """Queue the commands of `run`'s life in a pipeline (transaction=False is fine: each step is a script)."""
    record = records.new_record(run.task_id, run.kind, "全量刷新" if run.kind == "full" else "北京市", None, SPEC)
    record.update(created_ts=repr(run.created), created_at=iso(run.created), updated_at=iso(run.created))
    if run.kind == "province":
        record["provinces"] = json.dumps([{"code": run.province, "name": "北京市", "level": "province"}])
    records.add_record(pipe, record)
    scripts = Scripts(pipe)
    task_key = keys.task(run.task_id)
    if run.started is not None:
        at = iso(run.started)
        owner = record["owner"]
        scripts.start(keys=limits.start_keys(run.task_id, owner),
                      args=[10**6, at, run.started, owner, "started_at", at, "attempt_started_at", at])
        if run.hospitals:
            pipe.hset(keys.task_stats(run.task_id), "hospitals_found", run.hospitals)
        if run.progress:
            scripts.progress(keys=[task_key, keys.task_owners(run.task_id), keys.METRIC_COUNTERS, keys.TASKS_BY_UPDATED,
                                   keys.tasks_with_status_by_updated(RUNNING)],
                             args=[run.progress, "正在处理", at, run.started, "", "", ""])  # unfenced: no token
    if run.ended is not None:
        fields = {"finished_at": iso(run.ended)}
        if run.status == FAILED:
            fields["error_message"] = "1 of 1 provinces failed: 110000 404 not found"
        records.queue_transition(pipe, run.task_id, ACTIVE, run.status, fields, record=record, at=run.ended)


def fake_run(conn: redis.Redis, run: FakeRun) -> str:
    with conn.pipeline(transaction=False) as pipe:
        queue_fake_run(pipe, run)
        pipe.execute()
    return run.task_id
