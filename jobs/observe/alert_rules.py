"""The alert rules: what should be alerting now, each condition named by its rule and subject.

- refresh_failed (critical, at once): the latest refresh of a subject ("full", "province:CODE") FAILED;
  it clears when a later one succeeds (a full refresh that succeeds clears every province);
- task_run_failed (warning, at once): a named task's latest run failed for good (its retries spent);
- long_running (warning / critical): a task running longer than REFRESHQ_HEALTH_RUN_WARNING / _CRITICAL;
- failure_rate (warning / critical, for REFRESHQ_ALERT_FOR): of the refreshes ended in 24 h (at least
  REFRESHQ_ALERT_FAILURE_RATE_MIN_TASKS of them), more than _WARNING / _CRITICAL percent failed;
- stalled (warning): a RUNNING task whose progress has not moved for REFRESHQ_STALL_SECONDS;
- queue_backlog (warning, for REFRESHQ_ALERT_FOR): the job at a queue's head waited over REFRESHQ_HEALTH_QUEUE_AGE;
- dead_letters (warning): jobs in the dead-letter registry;
- no_worker (critical, for REFRESHQ_ALERT_FOR): jobs queued on a queue no live worker listens to;
- redis_memory (warning / critical, for REFRESHQ_ALERT_FOR): Redis' used memory near (at) its maxmemory.

While Redis refuses writes no alert can be committed or delivered through the outbox: that one alert,
redis_refusing_writes, is sent around it (jobs.observe.refusal_alarm).

A dead scheduler cannot alert about itself: that is for `refreshq health` and /metrics.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis

from jobs.config import Settings
from jobs.observe import health
from jobs.observe import metrics as reports
from jobs.observe import outcomes as run_lists
from jobs.observe import snapshot as snap
from jobs.observe.health import CRITICAL, WARNING, Issue
from jobs.statuses import FAILED, SUCCEEDED


@dataclass(frozen=True)
class Condition:
    """Something that should alert now; alerts with the same rule and subject are one alert."""

    rule: str
    subject: str
    severity: str
    for_seconds: float
    summary: str
    description: str
    value: float | int | str | None = None
    threshold: float | int | str | None = None


def _from_issue(issue: Issue, for_seconds: float = 0.0) -> Condition:
    return Condition(issue.rule, issue.subject, issue.severity, for_seconds, issue.message, issue.message,
                     issue.value, issue.threshold)


def _failed_runs(outcomes: dict[str, dict[str, Any]]) -> Iterator[Condition]:
    for subject, outcome in sorted(outcomes.items()):
        if outcome.get("status") != FAILED:
            continue
        error = outcome.get("error") or "no error recorded"
        if subject.startswith("task:"):
            name = subject.removeprefix("task:")
            yield Condition("task_run_failed", name, WARNING, 0.0, f"named task {name} failed",
                            f"run {outcome.get('job_id')} of {name} failed: {error}")
        else:
            yield Condition("refresh_failed", subject, CRITICAL, 0.0, f"refresh {subject} failed",
                            f"task {outcome.get('task_id')} ended FAILED: {error}", outcome.get("task_id"))


def _failure_rate(counts: dict[str, int], settings: Settings) -> Iterator[Condition]:
    a = settings.alerts
    decided = counts[SUCCEEDED] + counts[FAILED]
    if decided < a.failure_rate_min_tasks:
        return
    rate = 100.0 * counts[FAILED] / decided
    if rate <= a.failure_rate_warning:
        return
    critical = rate > a.failure_rate_critical
    limit = a.failure_rate_critical if critical else a.failure_rate_warning
    text = f"{rate:.1f}% of the {decided} refreshes ended in 24 h failed (over {limit:g}%)"
    yield Condition("failure_rate", "24h", CRITICAL if critical else WARNING, a.for_seconds,
                    "refresh failure rate is high", text, round(rate, 2), limit)


def conditions(settings: Settings, shot: snap.Snapshot, counts: dict[str, int],
               outcomes: dict[str, dict[str, Any]]) -> list[Condition]:
    """Every condition that holds, from what was read (pure: no Redis)."""
    t, hold = settings.health, settings.alerts.for_seconds
    return [
        *_failed_runs(outcomes),
        *(_from_issue(i) for i in health.long_running(shot, t)),
        *_failure_rate(counts, settings),
        *(_from_issue(i) for i in health.stalled(shot, t)),
        *(_from_issue(i, hold) for i in health.queue_backlog(shot, t)),
        *(_from_issue(i) for i in health.dead_letters(shot)),
        *(_from_issue(i, hold) for i in health.no_worker(shot)),
        *(_from_issue(i, hold) for i in health.memory(shot, t)),
    ]


def current_conditions(conn: redis.Redis, settings: Settings) -> tuple[float, list[Condition]]:
    """(now, the conditions that hold now), from a few reads."""
    shot = snap.take(conn)
    counts = reports.ended_counts(conn, shot.now - 86_400)
    return shot.now, conditions(settings, shot, counts, run_lists.outcomes(conn))
