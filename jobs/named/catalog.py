"""The catalog of named tasks: their definitions by name, found only in the modules REFRESHQ_TASK_MODULES lists.

Only those modules are searched, so a worker, the scheduler and the CLI agree on what exists without
anything scanning the disk. ("Catalog", not "registry": RQ's registries are its job registries.)
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from jobs.config import Settings
from jobs.errors import ConfigError, DuplicateTaskError, UnknownTaskError
from jobs.named.definitions import TaskDefinition, check_definition

_MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")

class TaskCatalog:
    """Task definitions by name; registering a second function under a taken name is an error."""

    def __init__(self, tasks: Sequence[TaskDefinition] = (), modules: Sequence[str] | None = None) -> None:
        # The modules it was loaded from (REFRESHQ_TASK_MODULES), when it was: what workers will find.
        self.modules = tuple(modules) if modules is not None else None
        self._tasks: dict[str, TaskDefinition] = {}
        for definition in tasks:
            self.register(definition)

    def register(self, definition: TaskDefinition) -> TaskDefinition:
        check_definition(definition)
        existing = self._tasks.get(definition.name)
        if existing is not None and _origin(existing.func) != _origin(definition.func):
            raise DuplicateTaskError(
                f"task name {definition.name!r} is registered twice: by {_origin(existing.func)} "
                f"and by {_origin(definition.func)}"
            )
        self._tasks[definition.name] = definition  # the same function again: a module imported twice
        return definition

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

    def from_modules(self, modules: Sequence[str]) -> TaskCatalog:
        """The tasks defined in `modules`."""
        return TaskCatalog([d for d in self if d.module in modules], modules)


def _origin(func: Callable[..., Any]) -> str:
    return f"{func.__module__}.{getattr(func, '__qualname__', repr(func))}"


# Every @task (jobs.named.task) registers here at import; `load_tasks` then keeps only the configured modules' tasks.
CATALOG = TaskCatalog()

_loaded: dict[tuple[str, ...], TaskCatalog] = {}


def load_tasks(modules: Sequence[str]) -> TaskCatalog:
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
        _loaded[key] = CATALOG.from_modules(key)
    return _loaded[key]


def configured_tasks(settings: Settings) -> TaskCatalog:
    """The tasks of REFRESHQ_TASK_MODULES of `settings`."""
    return load_tasks(settings.server.task_modules)


def summary(d: TaskDefinition) -> dict[str, Any]:
    """A task as `tasks list --json` and the API show it."""
    return {
        "name": d.name, "description": d.description, "category": d.category, "tags": list(d.tags),
        "priority": d.priority.value, "queue": d.queue, "time_limit": d.time_limit,
        "retries": d.retry.max_retries, "module": d.module,
        "default_schedule": d.schedule.trigger.describe() if d.schedule else None,
    }
