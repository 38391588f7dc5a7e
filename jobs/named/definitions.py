"""Named-task definitions: a plain function plus what refreshq needs to run it.

A priority (which queue), a retry policy (jobs.retry_policy), a time limit, hooks and an optional default
schedule, checked when the task registers in the catalog (jobs.named.catalog).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from rq.job import Retry

from jobs import queues
from jobs.errors import ConfigError, ScheduleError
from jobs.named import arguments
from jobs.named.triggers import DEFAULT_TIMEZONE, Trigger, check_run_options, whole
from jobs.retry_policy import RetryPolicy, RetryWhen

# Task names become parts of RQ job ids and Redis keys, so they use the characters both accept.
TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
# Bounds of a task's options: beyond them RQ's timeouts and retry times overflow Redis or datetime.
MAX_RETRIES = 100
MAX_RETRY_DELAY = 7 * 86_400
MAX_TIME_LIMIT = 30 * 86_400
MAX_HISTORY_LIMIT = 100_000
MAX_HISTORY_DAYS = 3650.0


class Priority(StrEnum):
    """How urgent a task is: critical and high first; normal and low take turns with refresh jobs (jobs.queues)."""

    LOW = "LOW"
    NORMAL = "NORMAL"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"

    @property
    def queue(self) -> str:
        return {"LOW": queues.LOW, "NORMAL": queues.NORMAL, "HIGH": queues.HIGH, "CRITICAL": queues.CRITICAL}[self]


def task_retry(
    retries: int = 0, delay: int = 60, factor: float = 2.0, retry_when: RetryWhen | None = None
) -> RetryPolicy:
    """A named task's retry policy: `retries` more attempts after a failure, the first after `delay` s, each
    later one `factor` times longer (capped at MAX_RETRY_DELAY), without jitter: RQ's `Retry` takes fixed
    intervals."""
    return RetryPolicy(base=delay, factor=factor, cap=MAX_RETRY_DELAY, max_retries=retries, jitter=0.0,
                       retry_when=retry_when)


NO_RETRY = task_retry()


def check_retry(policy: RetryPolicy) -> None:
    if not (
        whole(policy.max_retries, 0, MAX_RETRIES) and whole(policy.base, 0, MAX_RETRY_DELAY)
        and isinstance(policy.factor, int | float) and math.isfinite(policy.factor) and 1 <= policy.factor <= 10
    ):
        raise ConfigError(
            f"retry policy (retries {policy.max_retries}, delay {policy.base}, backoff {policy.factor}) is not "
            f"valid: expected retries 0 to {MAX_RETRIES}, delay 0 to {MAX_RETRY_DELAY} s, backoff 1 to 10"
        )


def rq_retry(policy: RetryPolicy) -> Retry | None:
    """RQ's `Retry` of a named task's policy (None: no retries)."""
    return Retry(max=policy.max_retries, interval=policy.intervals()) if policy.max_retries else None


@dataclass(frozen=True)
class ScheduleSpec:
    """A task's default schedule, installed when the scheduler starts unless an operator changed it."""

    cron: str | None = None
    interval: int | None = None
    timezone: str = DEFAULT_TIMEZONE
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    max_instances: int = 1
    misfire_grace_time: int = 300
    coalesce: bool = True

    @property
    def trigger(self) -> Trigger:
        return Trigger(self.cron, self.interval, self.timezone)


@dataclass(frozen=True)
class Hooks:
    """Optional calls around a run: `validate()` -> bool, `before()`, `after(result)`, `on_failure(error)`."""

    validate: Callable[[], bool] | None = None
    before: Callable[[], None] | None = None
    after: Callable[[Any], None] | None = None
    on_failure: Callable[[BaseException], None] | None = None


@dataclass(frozen=True)
class TaskDefinition:
    """A named task: its function and options, plain data (what runs it is jobs.named.runs; the handle
    `@task` returns, jobs.named.task, adds `.delay()`, `.s()` and `.get_result()`). Calling it runs the
    function here."""

    name: str
    func: Callable[..., Any]
    description: str = ""
    category: str = "general"
    tags: tuple[str, ...] = ()
    priority: Priority = Priority.NORMAL
    schedule: ScheduleSpec | None = None
    retry: RetryPolicy = NO_RETRY
    time_limit: int = 1800
    hooks: Hooks = Hooks()
    history_limit: int = 100
    history_days: float = 30.0

    @property
    def module(self) -> str:
        return str(self.func.__module__)

    @property
    def queue(self) -> str:
        return self.priority.queue

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)



def check_definition(d: TaskDefinition) -> None:
    check_retry(d.retry)
    if not TASK_NAME.fullmatch(d.name):
        raise ConfigError(f"task name {d.name!r} is not valid: expected letters, digits, '-' or '_' (at most 64)")
    days = d.history_days
    if not (
        whole(d.time_limit, 1, MAX_TIME_LIMIT) and whole(d.history_limit, 1, MAX_HISTORY_LIMIT)
        and isinstance(days, int | float) and math.isfinite(days) and 0 < days <= MAX_HISTORY_DAYS
    ):
        raise ConfigError(
            f"task {d.name}: expected a time limit of 1 to {MAX_TIME_LIMIT} s, a history limit of 1 to "
            f"{MAX_HISTORY_LIMIT} and history days above 0, at most {MAX_HISTORY_DAYS:g}"
        )
    if d.schedule is not None:
        try:
            d.schedule.trigger  # noqa: B018 - building it validates the cron expression and timezone
            check_run_options(d.schedule.max_instances, d.schedule.misfire_grace_time)
        except ScheduleError as exc:
            raise ConfigError(f"task {d.name}: default schedule: {exc}") from None
        try:
            problem = arguments.check_call(d.func, *arguments.as_json(d.schedule.args, d.schedule.kwargs))
        except (TypeError, ValueError) as exc:
            problem = f"not JSON: {exc}"
        if problem is not None:
            raise ConfigError(f"task {d.name}: default schedule: arguments do not fit the function: {problem}")


def definition_of(
    func: Callable[..., Any],
    name: str | None = None,
    *,
    description: str | None = None,
    category: str = "general",
    tags: Sequence[str] = (),
    priority: Priority | str = Priority.NORMAL,
    schedule: ScheduleSpec | None = None,
    retries: int = 0,
    retry_delay: int = 60,
    retry_backoff: float = 2.0,
    retry_when: RetryWhen | None = None,
    time_limit: int = 1800,
    validate: Callable[[], bool] | None = None,
    before: Callable[[], None] | None = None,
    after: Callable[[Any], None] | None = None,
    on_failure: Callable[[BaseException], None] | None = None,
    history_limit: int = 100,
    history_days: float = 30.0,
) -> TaskDefinition:
    """A TaskDefinition from the decorator's options (the description defaults to the docstring's first line)."""
    doc = (func.__doc__ or "").strip().splitlines()
    return TaskDefinition(
        name=name or func.__name__.replace("_", "-"),
        func=func,
        description=description if description is not None else (doc[0] if doc else ""),
        category=category,
        tags=tuple(tags),
        priority=Priority(priority),
        schedule=schedule,
        retry=task_retry(retries, retry_delay, retry_backoff, retry_when),
        time_limit=time_limit,
        hooks=Hooks(validate, before, after, on_failure),
        history_limit=history_limit,
        history_days=history_days,
    )

