"""The `@task` decorator and the handle it returns: the definition, plus `.delay()`, `.s()`, `.get_result()`.

As huey's `@huey.task()` and dramatiq's `Actor`: the definition stays plain data (jobs.named.definitions)
that the catalog, the runner and the scheduler read; only the handle knows how to enqueue.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis

from jobs.context import process_settings
from jobs.named import runs
from jobs.named.catalog import CATALOG
from jobs.named.definitions import TaskDefinition, definition_of
from jobs.named.workflows import Signature


@dataclasses.dataclass(frozen=True)
class TaskHandle(TaskDefinition):
    """A registered task. Calling it runs the function here; `.delay()` runs it on a worker."""

    @classmethod
    def of(cls, definition: TaskDefinition) -> TaskHandle:
        return cls(**{f.name: getattr(definition, f.name) for f in dataclasses.fields(definition)})

    def delay(self, *args: Any, **kwargs: Any) -> str:
        """Enqueue a run with these arguments (JSON only) on the default connection; return its run id."""
        return self.enqueue(args=args, kwargs=kwargs)

    def enqueue(
        self, conn: redis.Redis | None = None, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None
    ) -> str:
        # A library entry point: the settings are read once, here, and passed down.
        settings = process_settings()
        return runs.enqueue_task(conn or runs.default_connection(settings), self, args, kwargs or {},
                                 modules=settings.server.task_modules)

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature: this task with these arguments, for `chain()` and `batch()`."""
        return Signature.of(self, args, kwargs)

    def get_result(self, run_id: str, timeout: float = 60, conn: redis.Redis | None = None) -> Any:
        return runs.get_result(run_id, timeout=timeout, conn=conn)


def task(name: str | None = None, **options: Any) -> Callable[[Callable[..., Any]], TaskHandle]:
    """Decorator: `@task(name="cleanup", retries=3, priority=Priority.LOW, schedule=ScheduleSpec(...))`;
    registers the task in the catalog (every import of a task module does) and returns its handle."""

    def register(func: Callable[..., Any]) -> TaskHandle:
        handle = TaskHandle.of(definition_of(func, name, **options))
        CATALOG.register(handle)
        return handle

    return register
