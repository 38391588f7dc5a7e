"""refreshq: crash-safe, resumable refresh jobs on RQ and Redis.

The public API: `TaskManager` (async), `SyncTaskManager` and the errors.
"""

from jobs.errors import (
    RefreshqError,
    TaskCancellationError,
    TaskCreationError,
    TaskError,
    TaskExecutionError,
    TaskNotFoundError,
    TaskTimeoutError,
    ValidationError,
)
from jobs.manager import SyncTaskManager, TaskManager

__all__ = [
    "RefreshqError",
    "SyncTaskManager",
    "TaskCancellationError",
    "TaskCreationError",
    "TaskError",
    "TaskExecutionError",
    "TaskManager",
    "TaskNotFoundError",
    "TaskTimeoutError",
    "ValidationError",
]
