"""Outcomes of named-task runs and refreshes as they end: the per-kind lists (the last 200 of each kind) and
the latest outcome per subject.

Refreshes are recorded by transition.lua (jobs/scripts) when one ends; named-task runs here,
in the transaction that completes their history record (jobs.named.history), or, when their worker died
and the record was still RUNNING, by `jobs.named.history.note_lost_run`. A run summary: status,
run_seconds (from its start), queue_wait_seconds (from its enqueueing to its start), records (refreshes), ended_ts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import redis

from jobs import keys
from jobs.observe import counters
from jobs.redis_values import as_text, as_text_map, as_texts
from jobs.statuses import SUCCEEDED

RUN_LIST_LENGTH = 200
REFRESH_KINDS = ("full", "province")


def task_kind(task_name: str) -> str:
    """The run kind of a named task: `task:NAME`."""
    return f"task:{task_name}"


def queue_named_run(pipe: redis.client.Pipeline, entry: Mapping[str, Any], retrying: bool = False) -> None:
    """Queue, in the caller's MULTI, what the end of a named run records: its counter, its histogram, its
    run summary and, once it will not be retried, its task's latest outcome (what alerts read)."""
    task, status = str(entry["task"]), str(entry["status"])
    kind = task_kind(task)
    run = float(entry.get("duration") or 0.0)
    pipe.hincrby(keys.METRIC_COUNTERS, counters.name(counters.TASK_RUNS, task, status), 1)
    if retrying:
        pipe.hincrby(keys.METRIC_COUNTERS, counters.name(counters.RETRIES, "task"), 1)
    counters.queue_run_seconds(pipe, kind, run)
    summary = {
        "job_id": entry.get("job_id"), "attempt": entry.get("attempt"), "status": status, "run_seconds": run,
        "queue_wait_seconds": entry.get("queue_wait_seconds"), "ended_ts": entry.get("ended_ts"),
        "retrying": retrying,
    }
    pipe.lpush(keys.run_list(kind), json.dumps(summary))
    pipe.ltrim(keys.run_list(kind), 0, RUN_LIST_LENGTH - 1)
    pipe.sadd(keys.RUN_KINDS, kind)
    if status == SUCCEEDED or not retrying:
        outcome = {"status": status, "job_id": entry.get("job_id"), "ended_ts": entry.get("ended_ts"),
                   "error": str(entry.get("error") or "")[:500]}
        pipe.hset(keys.OUTCOMES, kind, json.dumps(outcome, ensure_ascii=False))


def run_kinds(conn: redis.Redis) -> list[str]:
    """The refresh kinds, then every named task that has ended a run, by name."""
    named = sorted(k for k in as_texts(conn.smembers(keys.RUN_KINDS)) if k not in REFRESH_KINDS)
    return [*REFRESH_KINDS, *named]


def recent_runs(conn: redis.Redis, kinds: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The run summaries of each kind, newest first (one round trip)."""
    with conn.pipeline(transaction=False) as pipe:
        for kind in kinds:
            pipe.lrange(keys.run_list(kind), 0, RUN_LIST_LENGTH - 1)
        lists = pipe.execute()
    return {kind: [json.loads(item) for item in items] for kind, items in zip(kinds, lists, strict=True)}


def outcomes(conn: redis.Redis | redis.client.Pipeline) -> dict[str, dict[str, Any]]:
    """The latest outcome of every subject: "full", "province:CODE", "task:NAME"."""
    raw = as_text_map(conn.hgetall(keys.OUTCOMES))
    return {subject: json.loads(value) for subject, value in raw.items()}


def parse_outcomes(raw: Mapping[bytes, bytes]) -> dict[str, dict[str, Any]]:
    return {as_text(subject): json.loads(value) for subject, value in raw.items()}
