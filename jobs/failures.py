"""How a failed job is to be treated, decided where it failed, by the exception's type, and recorded.

The retry sweeper (jobs.duties.retries) reads the record. It is written by RQ's exception handlers: in the
work-horse when a job raises (workers.RefreshqWorker), in the worker when its work-horse died or was
stopped, and in the started-registry cleanup when a job's worker died (AbandonedJobError; see
jobs.duties.abandoned, and RQ's worker maintenance, which passes the worker's handlers too).
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

import httpx
import redis
from rq.exceptions import AbandonedJobError
from rq.job import Job
from rq.timeouts import JobTimeoutException

from jobs import keys
from jobs.errors import RefreshqError
from jobs.reconnect import refusal
from jobs.redis_values import as_text_map

log = logging.getLogger("refreshq.failures")

TRANSIENT, PERMANENT, NEVER = "transient", "permanent", "never"
# Failures of what lies underneath that say nothing about the job: a lost worker, the network, Redis (lost,
# or refusing writes for now: a job's own client waits those out, another's fails with them).
_TRANSIENT: tuple[type[BaseException], ...] = (
    AbandonedJobError, OSError, redis.ConnectionError, redis.TimeoutError, httpx.TransportError,
    redis.exceptions.OutOfMemoryError, redis.exceptions.ReadOnlyError,
)
ABANDONED = f"{AbandonedJobError.__module__}.{AbandonedJobError.__qualname__}"
RECORD_TTL = 30 * 86_400


def kind_of(exc_type: type[BaseException] | None) -> str:
    """TRANSIENT (worth retrying after a backoff) or PERMANENT, from the type of what the job raised."""
    if exc_type is None:
        return PERMANENT
    if issubclass(exc_type, RefreshqError):
        return TRANSIENT if exc_type.retryable else PERMANENT
    if issubclass(exc_type, JobTimeoutException):
        return PERMANENT  # a hard time limit is not retried
    return TRANSIENT if issubclass(exc_type, _TRANSIENT) else PERMANENT


def describe(exc_type: type[BaseException], exc_value: BaseException | None) -> str:
    """`jobs.errors.TransientUpstreamError: GET /regions: 503`: the last line of the traceback."""
    return traceback.format_exception_only(exc_type, exc_value)[-1].strip()


def record(conn: redis.Redis, job_id: str, kind: str, error: str, exception: str = "") -> None:
    """Store how the latest failure of a job is to be treated (read once by the sweeper)."""
    with conn.pipeline() as pipe:
        pipe.delete(keys.job_failure(job_id))
        pipe.hset(keys.job_failure(job_id), mapping={"kind": kind, "error": error[:500], "exception": exception})
        pipe.expire(keys.job_failure(job_id), RECORD_TTL)
        pipe.execute()


def exception_handler(job: Job, exc_type: type[BaseException], exc_value: BaseException, _tb: Any) -> bool:
    """An RQ exception handler: record the failure's kind; True lets RQ's own handling go on."""
    exception = f"{exc_type.__module__}.{exc_type.__qualname__}"
    kind = TRANSIENT if refusal(exc_value) else kind_of(exc_type)  # MISCONF, NOREPLICAS: a plain ResponseError
    try:
        record(job.connection, job.id, kind, describe(exc_type, exc_value), exception)
    except redis.RedisError as exc:  # the sweeper then classifies it from RQ's text, as for any unrecorded one
        log.warning("failures: could not record the failure of %s (%s)", job.id, exc)
    return True


def take(conn: redis.Redis, job_id: str) -> dict[str, str] | None:
    """The recorded failure of a job, removed so that a later failure is never mistaken for it."""
    with conn.pipeline() as pipe:
        pipe.hgetall(keys.job_failure(job_id))
        pipe.delete(keys.job_failure(job_id))
        raw, _ = pipe.execute()
    return as_text_map(raw) if raw else None
