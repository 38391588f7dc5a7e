"""Named tasks: the `@task` decorator, task definitions, and the registry that finds them by name.

A named task is a plain function plus what refreshq needs to run it: a priority (which queue), a retry
policy, a time limit, hooks and an optional default schedule. Only the modules listed in
REFRESHQ_TASK_MODULES are searched, so a worker, the scheduler and the CLI agree on what exists
without anything scanning the disk.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import redis
from rq.job import Retry

from jobs import arguments, queues
from jobs.config import Settings
from jobs.errors import ConfigError, DuplicateTaskError, ScheduleError, UnknownTaskError
from jobs.triggers import DEFAULT_TIMEZONE, Trigger, check_run_options

if TYPE_CHECKING:
    from jobs.workflows import Signature

# Task names become parts of RQ job ids and Redis keys, so they use the characters both accept.
TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
# Bounds of a task's options: beyond them RQ's timeouts and retry times overflow Redis or datetime.
MAX_RETRIES = 100
MAX_RETRY_DELAY = 7 * 86_400
MAX_TIME_LIMIT = 30 * 86_400
MAX_HISTORY_LIMIT = 100_000
MAX_HISTORY_DAYS = 3650.0


def _whole(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


class Priority(StrEnum):
    """How urgent a task is: critical and high first; normal and low take turns with refresh jobs (jobs.queues)."""

    LOW = "LOW"
    NORMAL = "NORMAL"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"

    @property
    def queue(self) -> str:
        return {"LOW": queues.LOW, "NORMAL": queues.NORMAL, "HIGH": queues.HIGH, "CRITICAL": queues.CRITICAL}[self]


@dataclass(frozen=True)
class RetryPolicy:
    """`max_retries` more attempts after a failure, the first after `delay` s, each later one `backoff` times longer."""

    max_retries: int = 0
    delay: int = 60
    backoff: float = 2.0

    def __post_init__(self) -> None:
        if not (
            _whole(self.max_retries, 0, MAX_RETRIES) and _whole(self.delay, 0, MAX_RETRY_DELAY)
            and isinstance(self.backoff, int | float) and math.isfinite(self.backoff) and 1 <= self.backoff <= 10
        ):
            raise ConfigError(
                f"retry policy {self} is not valid: expected retries 0 to {MAX_RETRIES}, delay 0 to "
                f"{MAX_RETRY_DELAY} s, backoff 1 to 10"
            )

    def intervals(self) -> list[int]:
        # Capped: delay * backoff**i grows past any date a retry could be scheduled at.
        return [int(min(self.delay * self.backoff**i, MAX_RETRY_DELAY)) for i in range(self.max_retries)]

    def rq_retry(self) -> Retry | None:
        return Retry(max=self.max_retries, interval=self.intervals()) if self.max_retries else None


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
    """A registered task. Calling it runs the function here; `.delay()` runs it on a worker."""

    name: str
    func: Callable[..., Any]
    description: str = ""
    category: str = "general"
    tags: tuple[str, ...] = ()
    priority: Priority = Priority.NORMAL
    schedule: ScheduleSpec | None = None
    retry: RetryPolicy = RetryPolicy()
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

    def delay(self, *args: Any, **kwargs: Any) -> str:
        """Enqueue a run with these arguments (JSON only) on the default connection; return its task id."""
        return self.enqueue(args=args, kwargs=kwargs)

    def enqueue(
        self, conn: redis.Redis | None = None, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None
    ) -> str:
        from jobs import runs

        return runs.enqueue_task(conn or runs.default_connection(), self, args, kwargs or {})

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature: this task with these arguments, for `chain()` and `batch()`."""
        from jobs.workflows import Signature

        return Signature.of(self, args, kwargs)

    def get_result(self, task_id: str, timeout: float = 60, conn: redis.Redis | None = None) -> Any:
        from jobs import runs

        return runs.get_result(task_id, timeout=timeout, conn=conn)


def _check_definition(d: TaskDefinition) -> None:
    if not TASK_NAME.fullmatch(d.name):
        raise ConfigError(f"task name {d.name!r} is not valid: expected letters, digits, '-' or '_' (at most 64)")
    days = d.history_days
    if not (
        _whole(d.time_limit, 1, MAX_TIME_LIMIT) and _whole(d.history_limit, 1, MAX_HISTORY_LIMIT)
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


class TaskRegistry:
    """Task definitions by name; registering a second function under a taken name is an error."""

    def __init__(self, tasks: Sequence[TaskDefinition] = ()) -> None:
        self._tasks: dict[str, TaskDefinition] = {}
        for definition in tasks:
            self.register(definition)

    def register(self, definition: TaskDefinition) -> TaskDefinition:
        _check_definition(definition)
        existing = self._tasks.get(definition.name)
        if existing is not None and _origin(existing.func) != _origin(definition.func):
            raise DuplicateTaskError(
                f"task name {definition.name!r} is registered twice: by {_origin(existing.func)} "
                f"and by {_origin(definition.func)}"
            )
        self._tasks[definition.name] = definition  # the same function again: a module imported twice
        return definition

    def task(self, name: str | None = None, **options: Any) -> Callable[[Callable[..., Any]], TaskDefinition]:
        """Decorator: `@task(name="cleanup", retries=3, priority=Priority.LOW, schedule=ScheduleSpec(...))`."""

        def register(func: Callable[..., Any]) -> TaskDefinition:
            return self.register(definition_of(func, name, **options))

        return register

    def get(self, name: str) -> TaskDefinition:
        try:
            return self._tasks[name]
        except KeyError:
            known = ", ".join(sorted(self._tasks)) or "none"
            raise UnknownTaskError(f"unknown task {name!r}: expected one of {known}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __iter__(self) -> Iterator[TaskDefinition]:
        return iter(sorted(self._tasks.values(), key=lambda d: d.name))

    def __len__(self) -> int:
        return len(self._tasks)

    def select(self, category: str | None = None, tag: str | None = None) -> list[TaskDefinition]:
        return [d for d in self if (category is None or d.category == category) and (tag is None or tag in d.tags)]

    def from_modules(self, modules: Sequence[str]) -> TaskRegistry:
        return TaskRegistry([d for d in self if d.module in modules])


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
        retry=RetryPolicy(retries, retry_delay, retry_backoff),
        time_limit=time_limit,
        hooks=Hooks(validate, before, after, on_failure),
        history_limit=history_limit,
        history_days=history_days,
    )


def _origin(func: Callable[..., Any]) -> str:
    return f"{func.__module__}.{getattr(func, '__qualname__', repr(func))}"


# Every @task registers here at import; `load_tasks` then keeps only the configured modules' tasks.
REGISTRY = TaskRegistry()
task = REGISTRY.task

_loaded: dict[tuple[str, ...], TaskRegistry] = {}


def load_tasks(modules: Sequence[str]) -> TaskRegistry:
    """Import the listed modules and return the tasks they define (and only those)."""
    key = tuple(modules)
    if key not in _loaded:
        for module in key:
            if not _MODULE_NAME.fullmatch(module):
                raise ConfigError(f"REFRESHQ_TASK_MODULES: {module!r} is not a module name")
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise ConfigError(f"REFRESHQ_TASK_MODULES: cannot import {module!r}: {exc}") from None
            except ConfigError:
                raise  # a task of the module is invalid (a duplicate name, a bad default schedule): says which
            except Exception as exc:
                # Any error a module raises at import makes its tasks unusable: the same verdict as a missing one.
                raise ConfigError(
                    f"REFRESHQ_TASK_MODULES: importing {module!r} failed: {type(exc).__name__}: {exc}"
                ) from None
        _loaded[key] = REGISTRY.from_modules(key)
    return _loaded[key]


def configured_tasks(settings: Settings | None = None) -> TaskRegistry:
    """The tasks of REFRESHQ_TASK_MODULES (read from the environment when no settings are given)."""
    return load_tasks((settings or Settings.from_env()).task_modules)
