"""The refreshq error tree: one root, a few branches, one line each on when it is raised.

Each class says whether a job that failed with it is worth retrying (`retryable`); the retry sweeper
acts on that (jobs.failures records it when the job fails).
"""

from __future__ import annotations

from typing import ClassVar

import redis


class RefreshqError(Exception):
    """Base class of every error refreshq raises on purpose."""

    # A job that failed with this error may succeed when run again later (after a backoff).
    retryable: ClassVar[bool] = False


class ConfigError(RefreshqError):
    """Raised when an environment variable holds a value refreshq cannot use."""


class UnsupportedRQError(ConfigError):
    """Raised when the installed rq is outside the range refreshq is tested with (jobs.rqseam.gate)."""


class ServerError(RefreshqError):
    """Raised when the embedded Valkey server cannot be started, reached or stopped."""


class DataDirError(ConfigError):
    """Raised when REFRESHQ_DATA_DIR cannot hold the embedded server's files (a file, not writable, too long)."""


class ServerUnreachableError(ConfigError):
    """Raised when the Redis server in use cannot be reached, refuses the credentials or does not speak Redis."""


class ValidationError(RefreshqError):
    """Raised when user input (a province, an argument, an option) is invalid; nothing is stored."""


class UpstreamError(RefreshqError):
    """Raised when the upstream directory answers with an error or with garbage."""


class TransientUpstreamError(UpstreamError):
    """Raised when an upstream request failed in a way worth retrying (5xx, 429, timeout, bad body)."""

    retryable: ClassVar[bool] = True

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UpstreamInconsistencyError(TransientUpstreamError):
    """Raised when an answer contradicts itself (total vs items served, a repeated page, a bad item); retried."""


class PermanentUpstreamError(UpstreamError):
    """Raised when the upstream says a region does not exist (404) or keeps answering invalid data."""


class RegionFailedError(PermanentUpstreamError):
    """Raised when a region's answer stayed inconsistent or invalid through every allowed attempt."""


class TaskError(RefreshqError):
    """Base class of errors about refresh tasks and named-task runs."""


class TaskCreationError(TaskError):
    """Raised when a refresh task cannot be created (too many are pending, Redis refused the write)."""


class TaskNotFoundError(TaskError):
    """Raised when no refresh-task record (or dead job) has the given id."""


class TaskExecutionError(TaskError):
    """Raised when a refresh task or a named-task run ran and failed."""


class TaskTimeoutError(TaskError):
    """Raised when a refresh task or a named-task run, or a wait for one, runs past its time limit."""


class UpstreamGateClosed(TaskError):
    """Raised when a request waits at the upstream gate of a job that has ended (cancelled, shut down)."""


class StagingLostError(TaskError):
    """Raised when leaves a job staged are missing from the checkpoint again (a server lost acknowledged writes)."""

    retryable: ClassVar[bool] = True


class StaleExecutionError(TaskError):
    """Raised when a job execution writes for work another execution took over since, or that ended (it was
    paused, partitioned or declared abandoned); nothing was written and the execution stops."""


class TaskStateError(TaskError):
    """Raised when an operation does not fit the refresh task's status (resuming a running task)."""


class UnknownTaskError(ValidationError):
    """Raised when no registered named task (see REFRESHQ_TASK_MODULES) has the given name."""


class DuplicateTaskError(ConfigError):
    """Raised when two different functions register the same named-task name."""


class TaskArgumentsError(ValidationError):
    """Raised when a named task's arguments are not JSON-serializable or do not fit its function."""


class TaskEnvironmentError(TaskExecutionError):
    """Raised when a named task's validate-environment hook refuses to let it run."""


class ScheduleError(ValidationError):
    """Raised when a schedule is invalid (cron expression, interval, timezone, options); nothing is stored."""


class ScheduleNotFoundError(ValidationError):
    """Raised when no schedule has the given name."""


class WorkflowNotFoundError(ValidationError):
    """Raised when no chain or batch has the given id."""


class AlertDeliveryError(RefreshqError):
    """Raised when an alert notice could not be delivered on a channel (refused, unreachable, timed out)."""
class LimitExceededError(TaskCreationError):
    """Raised when a user already has as many running or pending tasks as their token allows."""

    def __init__(self, message: str, retry_after: int = 10) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class IdempotencyConflictError(ValidationError):
    """Raised when an idempotency key is reused for a request that differs from its first use."""


class TokenNotFoundError(ValidationError):
    """Raised when no API token has the given id."""


class WritesRefusedError(RefreshqError, redis.ConnectionError):
    """Raised when Redis refuses writes for now (OOM, READONLY, MISCONF, NOREPLICAS) and the caller does not wait.

    A redis.ConnectionError too: whatever copes with a lost server (a stopping worker, a job's retry) copes
    with it alike.
    """

    retryable: ClassVar[bool] = True


class UpstreamMismatchError(ValidationError):
    """Raised when a task's upstream is not the one the deployment's workers fetch from; nothing is fetched."""


class UpstreamUnavailableError(ValidationError):
    """Raised when a new task's upstream could not be asked for its provinces (unreachable, refusing)."""


# The glossary's name (issue 21): no refresh record has the given id. TaskNotFoundError is the same class.
RefreshNotFoundError = TaskNotFoundError
