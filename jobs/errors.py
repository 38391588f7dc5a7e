"""The refreshq error tree: one root, one base per way of handling an error, one line each on when it is raised.

Every error descends from exactly one handling base; the CLI maps each base to one exit code (cli.py) and
the HTTP API to one status (web/api/problems.py):

- NotFoundError: the id or name given names nothing (404).
- ConflictError: the request is valid but the thing's state does not allow it now (409).
- ValidationError: the input is invalid; nothing was stored (422).
- ConfigError: the deployment's settings or code cannot work (500).
- UnavailableError: the server (Redis, the embedded Valkey) is away or refuses work for now; try later (503).
- UpstreamError: a service refreshq calls (the upstream directory, an alert channel) failed (502).
- WorkFailedError: work refreshq ran for the caller failed or did not end in time.
- _EngineError: raised and handled inside a job execution; it reaches no user.

Each class also says whether a job that failed with it is worth retrying (`retryable`); the retry sweeper
acts on that (jobs.failures records it when the job fails).
"""

from __future__ import annotations

from typing import ClassVar

import redis


class RefreshqError(Exception):
    """Base class of every error refreshq raises on purpose."""

    # A job that failed with this error may succeed when run again later (after a backoff).
    retryable: ClassVar[bool] = False


# The handling bases.


class NotFoundError(RefreshqError):
    """Raised when no record of the kind asked for has the given id or name."""


class ConflictError(RefreshqError):
    """Raised when a valid request does not fit the current state of what it names (nothing was changed)."""


class ValidationError(RefreshqError):
    """Raised when user input (a province, an argument, an option) is invalid; nothing is stored."""


class ConfigError(RefreshqError):
    """Raised when the deployment's settings or task code cannot work (an environment variable, a task module)."""


class UnavailableError(RefreshqError):
    """Raised when the server is unreachable or refuses work for now; the same request may succeed later."""


class UpstreamError(RefreshqError):
    """Raised when a service refreshq calls (the upstream directory, an alert channel) fails or answers garbage."""

    # Whether the same request may succeed later (a subclass says so); a permanent answer is not retried.
    retryable: ClassVar[bool] = False


class WorkFailedError(RefreshqError):
    """Raised when work refreshq ran for the caller (a refresh, a run, a workflow) failed or did not end in time."""


class _EngineError(RefreshqError):
    """Raised when a job execution meets a condition the engine handles itself (it stops, retries or records it)."""


# Kept importable: the old root of every task error (not found, state, creation, failure), now grouped by handling.
TaskError = WorkFailedError

# Not found.


class TaskNotFoundError(NotFoundError):
    """Raised when no refresh-task record (or dead job) has the given id."""


class UnknownTaskError(NotFoundError):
    """Raised when no registered named task (see REFRESHQ_TASK_MODULES) has the given name."""


class ScheduleNotFoundError(NotFoundError):
    """Raised when no schedule has the given name."""


class WorkflowNotFoundError(NotFoundError):
    """Raised when no chain or batch has the given id."""


class TokenNotFoundError(NotFoundError):
    """Raised when no API token has the given id."""


# Conflicts.


class TaskStateError(ConflictError):
    """Raised when an operation does not fit the refresh task's status (resuming a running task)."""


class ServerRunningError(ConflictError):
    """Raised when the embedded server is started while one is already running on the data directory."""


# Validation.


class TaskArgumentsError(ValidationError):
    """Raised when a named task's arguments are not JSON-serializable or do not fit its function."""


class ScheduleError(ValidationError):
    """Raised when a schedule is invalid (cron expression, interval, timezone, options); nothing is stored."""


# A validation error, not a conflict: the IETF Idempotency-Key draft answers a key reused for another request 422.
class IdempotencyConflictError(ValidationError):
    """Raised when an idempotency key is reused for a request that differs from its first use."""


class UpstreamMismatchError(ValidationError):
    """Raised when a task's upstream is not the one the deployment's workers fetch from; nothing is fetched."""


# Configuration.


class UnsupportedRQError(ConfigError):
    """Raised when the installed rq is outside the range refreshq is tested with (jobs.rqseam.gate)."""


class DataDirError(ConfigError):
    """Raised when REFRESHQ_DATA_DIR cannot hold the embedded server's files (a file, not writable, too long)."""


class DuplicateTaskError(ConfigError):
    """Raised when two different functions register the same named-task name."""


class ServerRefusedError(ConfigError):
    """Raised when the Redis server in use refuses the credentials, or what REDIS_URL names does not speak Redis."""


# Unavailable.


class ServerError(UnavailableError):
    """Raised when the embedded Valkey server cannot be started, reached or stopped."""


class ServerUnreachableError(UnavailableError):
    """Raised when the Redis server in use cannot be reached (refused, no answer, unknown host) or is still loading."""


class WritesRefusedError(UnavailableError, redis.ConnectionError):
    """Raised when Redis refuses writes for now (OOM, READONLY, MISCONF, NOREPLICAS) and the caller does not wait.

    A redis.ConnectionError too: whatever copes with a lost server (a stopping worker, a job's retry) copes
    with it alike.
    """

    retryable: ClassVar[bool] = True


class TaskCreationError(UnavailableError):
    """Raised when a refresh task cannot be created now (too many are pending, Redis refused the write)."""


class LimitExceededError(TaskCreationError):
    """Raised when a user already has as many running or pending tasks as their token allows."""

    def __init__(self, message: str, retry_after: int = 10) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# Upstream.


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


class UpstreamUnavailableError(UpstreamError):
    """Raised when a new task's upstream could not be asked for its provinces (unreachable, refusing)."""


class AlertDeliveryError(UpstreamError):
    """Raised when an alert notice could not be delivered on a channel (refused, unreachable, timed out)."""

    retryable: ClassVar[bool] = True  # the notice stays pending and is sent again


# Work failed.


class TaskExecutionError(WorkFailedError):
    """Raised when a refresh task or a named-task run ran and failed."""


class TaskTimeoutError(WorkFailedError):
    """Raised when a refresh task or a named-task run, or a wait for one, runs past its time limit."""


class TaskEnvironmentError(TaskExecutionError):
    """Raised when a named task's validate-environment hook refuses to let it run."""


# The engine's own: a job execution raises and handles these itself.


class UpstreamGateClosed(_EngineError):
    """Raised when a request waits at the upstream gate of a job that has ended (cancelled, shut down)."""


class StagingLostError(_EngineError):
    """Raised when leaves a job staged are missing from the checkpoint again (a server lost acknowledged writes)."""

    retryable: ClassVar[bool] = True


class StaleExecutionError(_EngineError):
    """Raised when a job execution writes for work another execution took over since, or that ended (it was
    paused, partitioned or declared abandoned); nothing was written and the execution stops."""


# The handling bases, in the order the CLI's and the API's tables list them.
HANDLING_BASES: tuple[type[RefreshqError], ...] = (
    NotFoundError, ConflictError, ValidationError, ConfigError, UnavailableError, UpstreamError, WorkFailedError,
    _EngineError,
)


# The glossary's name (issue 21): no refresh record has the given id. TaskNotFoundError is the same class.
RefreshNotFoundError = TaskNotFoundError
