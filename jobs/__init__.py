"""refreshq: crash-safe, resumable refresh jobs on RQ and Redis.

The public API: `RefreshManager` (async), `SyncRefreshManager` and the errors. `TaskManager` and
`SyncTaskManager` are aliases of the two managers, `TaskNotFoundError` of `RefreshNotFoundError`: the
reference design's names.
"""

from typing import TYPE_CHECKING, Any

from jobs.errors import (
    RefreshNotFoundError,
    RefreshqError,
    TaskCreationError,
    TaskError,
    TaskExecutionError,
    TaskNotFoundError,
    TaskTimeoutError,
    ValidationError,
)

if TYPE_CHECKING:
    from jobs.refresh.manager import RefreshManager, SyncRefreshManager, SyncTaskManager, TaskManager


def __getattr__(name: str) -> Any:
    # The managers pull in RQ and redis; importing them lazily keeps `import jobs.config` (every
    # command's first step) and the CLI's start-up cheap.
    if name in ("RefreshManager", "SyncRefreshManager", "TaskManager", "SyncTaskManager"):
        from jobs.refresh import manager

        return getattr(manager, name)
    raise AttributeError(f"module 'jobs' has no attribute {name!r}")

__all__ = [
    "RefreshManager",
    "RefreshNotFoundError",
    "RefreshqError",
    "SyncRefreshManager",
    "SyncTaskManager",
    "TaskCreationError",
    "TaskError",
    "TaskExecutionError",
    "TaskManager",
    "TaskNotFoundError",
    "TaskTimeoutError",
    "ValidationError",
]
