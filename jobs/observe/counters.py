"""Monotonic counters and run-time histograms, kept in Redis (one hash each), read at scrape time.

A counter is one field of `keys.METRIC_COUNTERS`: its name, then its labels, joined by "|" (e.g.
`tasks_ended|province|FAILED`). Counters only grow, from wherever the event happens: the task-status
script (tasks ended), leaf staging (records written), upstream clients (requests and errors, added by the
job that made them every few seconds and when it ends), the retry sweeper (retries, dead letters), the end
of a named run, the alert deliveries. A process that dies takes none of them with it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Mapping

import redis

from jobs import keys
from jobs.observe.run_ended import RUN_SECONDS_BUCKETS
from jobs.redis_values import as_text_map

log = logging.getLogger("refreshq.observe")

SEP = "|"
INF = "+Inf"
# How often a job adds its upstream requests to the counters (and once more when it ends): a few
# commands every few seconds, never one per request.
TALLY_FLUSH_SECONDS = 5.0

TASKS_ENDED = "tasks_ended"             # kind, status (refresh tasks; written by transition.lua)
TASK_RUNS = "task_runs"                 # task name, status (named-task attempts)
RECORDS_WRITTEN = "records_written"     # hospitals staged (written by stage_leaf.lua)
UPSTREAM_REQUESTS = "upstream_requests"  # upstream kind
UPSTREAM_ERRORS = "upstream_errors"     # upstream kind, error kind
RETRIES = "retries"                     # "refresh" (the sweeper) or "task" (a named task's own retries)
DEAD_LETTERS = "dead_letters"           # "refresh", "task" or "other"
ALERTS_SENT = "alerts_sent"             # channel, "firing" or "resolved"
ALERT_FAILURES = "alert_delivery_failures"  # channel
STALE_WRITES = "stale_writes"           # write (stage, publish, end, progress, walk, ...): refused by a fence
TOTAL_MISMATCHES = "upstream_total_mismatches"  # leaves taken with a stale `total` (written by stage_leaf.lua)
RECONCILED = "reconciled"               # province, plan, finish (refresh tasks), run (named): jobs.duties.reconcile
UPSTREAM_THROTTLED = "upstream_throttled"  # signal: "429", "503" (with Retry-After) or "latency" (jobs.pacing)


def name(*parts: str) -> str:
    return SEP.join(parts)


def bucket_of(seconds: float) -> str:
    """The histogram field a run of `seconds` is counted in (its bucket's upper bound)."""
    for bound in RUN_SECONDS_BUCKETS:
        if seconds <= bound:
            return str(bound)
    return INF


def queue_run_seconds(pipe: redis.client.Pipeline, kind: str, seconds: float) -> None:
    """Count one run of `kind` into its histogram (inside the caller's pipeline)."""
    key = keys.run_seconds(kind)
    pipe.hincrby(key, bucket_of(seconds), 1)
    pipe.hincrbyfloat(key, "sum", seconds)
    pipe.hincrby(key, "count", 1)


def read_counters(conn: redis.Redis | redis.client.Pipeline) -> dict[tuple[str, ...], float]:
    """Every counter, by (name, *labels)."""
    raw = as_text_map(conn.hgetall(keys.METRIC_COUNTERS))
    return {tuple(field.split(SEP)): float(value) for field, value in raw.items()}


def cumulative_buckets(raw: Mapping[str, str]) -> tuple[list[tuple[str, float]], float, float]:
    """A stored histogram as Prometheus wants it: cumulative (le, count) pairs ending at +Inf, sum, count."""
    running = 0.0
    buckets: list[tuple[str, float]] = []
    for bound in RUN_SECONDS_BUCKETS:
        running += float(raw.get(str(bound), 0))
        buckets.append((str(bound), running))
    running += float(raw.get(INF, 0))
    buckets.append((INF, running))
    return buckets, float(raw.get("sum", 0)), float(raw.get("count", running))


class UpstreamTally:
    """Counts one job's upstream requests by outcome in memory; adds them to the Redis counters every
    TALLY_FLUSH_SECONDS and on `flush()` (the job's end). Thread-safe: the job's request threads share it.

    An outcome is "ok" or an error kind ("timeout", "transport", "http_429", "http_5xx", "http_4xx",
    "invalid"); the clients report one per request attempt.
    """

    def __init__(self, conn: redis.Redis, kind: str, flush_seconds: float = TALLY_FLUSH_SECONDS) -> None:
        self.conn = conn
        self.kind = kind
        self.flush_seconds = flush_seconds
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._last_flush = time.monotonic()

    def __call__(self, outcome: str) -> None:
        with self._lock:
            self._counts[outcome] += 1
            due = time.monotonic() - self._last_flush >= self.flush_seconds
            if due:
                self._last_flush = time.monotonic()
        if due:
            self.flush()

    def flush(self) -> None:
        """Add what was counted since the last flush; on a Redis error it is kept for the next one."""
        with self._lock:
            counts, self._counts = self._counts, Counter()
        if not counts:
            return
        try:
            # MULTI: added all together or not at all, so counts kept after an error are never added twice
            with self.conn.pipeline() as pipe:
                pipe.hincrby(keys.METRIC_COUNTERS, name(UPSTREAM_REQUESTS, self.kind), sum(counts.values()))
                for outcome, count in counts.items():
                    if outcome != "ok":
                        pipe.hincrby(keys.METRIC_COUNTERS, name(UPSTREAM_ERRORS, self.kind, outcome), count)
                pipe.execute()
        except redis.RedisError as exc:
            log.debug("observe: upstream counters not added yet (%s)", exc)
            with self._lock:
                self._counts.update(counts)
