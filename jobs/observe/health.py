"""The health rules: each looks at the snapshot (and the 24 h metrics) and names what is wrong.

Thresholds come from the settings (REFRESHQ_HEALTH_*, REFRESHQ_STALL_SECONDS), the reference design's by
default. The overall status is the worst severity among the issues: ok, warning or critical.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import redis

from jobs import keys
from jobs.config import HealthThresholds, Settings
from jobs.observe import metrics as reports
from jobs.observe import snapshot as snap
from jobs.reconnect import writes_refused
from jobs.redis_values import as_text_map

OK, WARNING, CRITICAL = "ok", "warning", "critical"
RANK = {OK: 0, WARNING: 1, CRITICAL: 2}
# The active scheduler writes its heartbeat every tick (1 s); missing for this long, there is none.
SCHEDULER_STALE_SECONDS = 30.0
# Consecutive failed deliveries before an alert channel counts as failing.
CHANNEL_FAILURES = 3


@dataclass(frozen=True)
class Issue:
    rule: str
    severity: str
    subject: str
    value: float | int | str | None
    threshold: float | int | str | None
    message: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def worst(severities: list[str]) -> str:
    return max(severities, key=lambda s: RANK[s], default=OK)


def long_running(shot: snap.Snapshot, t: HealthThresholds) -> Iterator[Issue]:
    for row in shot.running:
        seconds = row.running_seconds(shot.now)
        if seconds is None or seconds <= t.run_warning:
            continue
        critical = seconds > t.run_critical
        limit = t.run_critical if critical else t.run_warning
        yield Issue("long_running", CRITICAL if critical else WARNING, row.task_id, round(seconds), limit,
                    f"task {row.task_id} has been running for {seconds / 3600:.1f} h (over {limit:g} s)")


def stalled(shot: snap.Snapshot, t: HealthThresholds) -> Iterator[Issue]:
    for row in shot.running:
        since = row.stalled_since()
        if since is not None and shot.now - since > t.stall_seconds:
            idle = round(shot.now - since)
            yield Issue("stalled", WARNING, row.task_id, idle, t.stall_seconds,
                        f"task {row.task_id} is RUNNING but its progress has not moved for {idle} s "
                        f"(at {row.fields.get('progress', '0')}%: {row.fields.get('current_step', '')})")


def queue_backlog(shot: snap.Snapshot, t: HealthThresholds) -> Iterator[Issue]:
    for queue in shot.queues:
        if queue.head_age is not None and queue.head_age > t.queue_age:
            yield Issue("queue_backlog", WARNING, queue.name, round(queue.head_age), t.queue_age,
                        f"the oldest job of queue {queue.name} has waited {queue.head_age:.0f} s "
                        f"({queue.depth} queued)")


def no_worker(shot: snap.Snapshot) -> Iterator[Issue]:
    for queue in shot.queues:
        if queue.depth > 0 and queue.live_workers == 0:
            yield Issue("no_worker", CRITICAL, queue.name, queue.depth, 0,
                        f"{queue.depth} job(s) queued on {queue.name} and no live worker listens to it")


def dead_letters(shot: snap.Snapshot) -> Iterator[Issue]:
    if shot.dead_letters:
        yield Issue("dead_letters", WARNING, "dead-letter", shot.dead_letters, 0,
                    f"{shot.dead_letters} job(s) in the dead-letter registry (refreshq failed list)")


def _success_rate(metrics: dict[str, Any], t: HealthThresholds) -> Iterator[Issue]:
    rate = metrics["success_rate"]
    if rate is not None and rate < t.min_success_rate:
        yield Issue("success_rate", WARNING, "24h", rate, t.min_success_rate,
                    f"{rate:.1f}% of the refreshes ended in 24 h succeeded (below {t.min_success_rate:g}%)")


def _too_many_running(shot: snap.Snapshot, t: HealthThresholds) -> Iterator[Issue]:
    running = shot.tasks_by_status["RUNNING"]
    if running > t.max_running:
        yield Issue("too_many_running", WARNING, "tasks", running, t.max_running,
                    f"{running} tasks are running (more than {t.max_running})")


def _scheduler(shot: snap.Snapshot) -> Iterator[Issue]:
    age = shot.now - shot.scheduler_beat if shot.scheduler_beat is not None else None
    if age is None or age > SCHEDULER_STALE_SECONDS:
        seen = "never seen in the last minute" if age is None else f"last seen {age:.0f} s ago"
        yield Issue("no_scheduler", CRITICAL, "scheduler", round(age) if age is not None else None,
                    SCHEDULER_STALE_SECONDS,
                    f"no active scheduler ({seen}): no retries, time limits, schedules or alerts")


def memory(shot: snap.Snapshot, t: HealthThresholds) -> Iterator[Issue]:
    if shot.memory_max <= 0:
        return
    percent = 100.0 * shot.memory_used / shot.memory_max
    if percent >= t.memory_percent:
        severity = CRITICAL if shot.memory_used >= shot.memory_max else WARNING
        yield Issue("redis_memory", severity, "redis", round(percent, 1), t.memory_percent,
                    f"Redis uses {shot.memory_used:,} of its maxmemory {shot.memory_max:,} bytes ({percent:.1f}%)")


def _writes(conn: redis.Redis) -> Iterator[Issue]:
    refused = writes_refused(conn)
    if refused is not None:
        yield Issue("redis_refusing_writes", CRITICAL, "redis", refused["reason"], None,
                    f"{refused['message']}: workers and the scheduler wait, running tasks do not move")


def _channels(conn: redis.Redis) -> Iterator[Issue]:
    for channel, raw in sorted(as_text_map(conn.hgetall(keys.ALERT_CHANNELS)).items()):
        state = json.loads(raw)
        failures = int(state.get("failures", 0))
        if failures >= CHANNEL_FAILURES:
            yield Issue("alert_channel_failing", WARNING, channel, failures, CHANNEL_FAILURES,
                        f"alert channel {channel} failed {failures} deliveries in a row: {state.get('last_error')}")


def issues(conn: redis.Redis, settings: Settings, shot: snap.Snapshot, metrics: dict[str, Any]) -> list[Issue]:
    t = settings.health
    return [
        *_success_rate(metrics, t), *long_running(shot, t), *_too_many_running(shot, t), *stalled(shot, t),
        *queue_backlog(shot, t), *no_worker(shot), *_scheduler(shot), *dead_letters(shot), *memory(shot, t),
        *_writes(conn), *_channels(conn),
    ]


def health_report(conn: redis.Redis, settings: Settings) -> dict[str, Any]:
    """{status, issues: [{rule, severity, subject, value, threshold, message}], metrics, timestamp}."""
    shot = snap.take(conn)
    metrics = reports.metrics_report(conn, settings, "24h", snapshot=shot)
    found = issues(conn, settings, shot, metrics)
    return {
        "status": worst([i.severity for i in found]),
        "issues": [i.as_dict() for i in found],
        "metrics": metrics,
        "timestamp": reports.iso(shot.now),
    }


def unreachable_report(error: str, now: float) -> dict[str, Any]:
    """The health of a system whose Redis cannot be reached: critical, and nothing else is known."""
    issue = Issue("redis_unreachable", CRITICAL, "redis", None, None, f"cannot reach Redis: {error}")
    return {"status": CRITICAL, "issues": [issue.as_dict()], "metrics": None, "timestamp": reports.iso(now)}
