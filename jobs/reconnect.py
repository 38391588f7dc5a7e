"""How refreshq's Redis clients retry a lost server.

A command gives up within a second or two: it fails with a clear message instead of hanging. A
long-running process (worker, work-horse, scheduler) waits for the server to come back, however
long it takes, logging when the outage starts, now and then while it lasts and when it ends, and
gives up as soon as the process is asked to stop (jobs/shutdown.py), so a SIGTERM is honoured
whether the server is back or not.

redis-py's own Retry cannot do the last two: it logs nothing and only knows a count of attempts.
Wrong credentials are never retried: the server will refuse them again (redis-py files them under
ConnectionError, so a plain Retry loops on them).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import AuthorizationError
from redis.retry import Retry

from jobs import shutdown

log = logging.getLogger("refreshq.redis")

T = TypeVar("T")

# Seconds between two "still unreachable" lines while an outage lasts.
OUTAGE_LOG_EVERY = 30.0
# A command's attempts after the first: enough to replace a connection the server dropped.
COMMAND_RETRIES = 2
# Once a stop is requested, attempts before giving up (one reconnect, in case the first failure
# was a connection the server had closed).
_ATTEMPTS_WHEN_STOPPING = 2
_SLEEP_SLICE = 0.1

_RETRIED: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError, socket.timeout)
_NEVER_RETRIED: tuple[type[Exception], ...] = (redis.AuthenticationError, AuthorizationError)


class Outage:
    """One log line when the server is lost, one every OUTAGE_LOG_EVERY seconds, one when it is back;
    shared by every connection and thread of a process, so threads do not each log every attempt."""

    def __init__(self, where: str, every: float = OUTAGE_LOG_EVERY) -> None:
        self.where = where
        self.every = every
        self._lock = threading.Lock()
        self._since: float | None = None
        self._logged_at = 0.0

    def failed(self, error: Exception) -> None:
        now = time.monotonic()
        with self._lock:
            if self._since is None:
                self._since = self._logged_at = now
                log.warning("Redis at %s unreachable (%s); retrying until it is back", self.where, error)
            elif now - self._logged_at >= self.every:
                self._logged_at = now
                log.warning("Redis at %s still unreachable after %.0f s (%s)", self.where, now - self._since, error)

    def recovered(self) -> None:
        with self._lock:
            if self._since is None:
                return
            log.info("Redis at %s is back after %.1f s", self.where, time.monotonic() - self._since)
            self._since = None


class ServerRetry(Retry):
    """redis-py's Retry, bounded by a count (commands) or by a stop request (long-running processes)."""

    def __init__(self, retries: int, outage: Outage | None = None) -> None:
        """`retries` < 0: retry until the process is asked to stop, reporting to `outage`."""
        super().__init__(ExponentialBackoff(cap=2.0, base=0.05), retries, _RETRIED)
        self.outage = outage

    def __deepcopy__(self, _memo: dict[int, Any]) -> ServerRetry:
        # redis-py deep-copies the Retry into every connection; the outage log must stay one per process.
        return self

    def call_with_retry(
        self,
        do: Callable[[], T],
        fail: Callable[[Exception], Any] | Callable[[Exception, int], Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        failures = 0
        while True:
            try:
                result = do()
            except self._supported_errors as error:
                if isinstance(error, _NEVER_RETRIED) or (is_retryable is not None and not is_retryable(error)):
                    raise
                failures += 1
                if with_failure_count:
                    fail(error, failures)  # type: ignore[call-arg]
                else:
                    fail(error)  # type: ignore[call-arg]
                if self._gives_up(failures):
                    raise error
                if self.outage is not None and failures > 1:
                    # A single failure is a connection the server closed (a restart, an idle timeout),
                    # replaced at the next attempt: an outage is when reconnecting fails too.
                    self.outage.failed(error)
                _pause(self._backoff.compute(failures))
                continue
            if failures and self.outage is not None:
                self.outage.recovered()
            return result

    def _gives_up(self, failures: int) -> bool:
        if shutdown.requested.is_set() and failures >= _ATTEMPTS_WHEN_STOPPING:
            return True
        return self._retries >= 0 and failures > self._retries


def _pause(seconds: float) -> None:
    """Sleep, cut short by a stop request (polled: see jobs/shutdown.py on why not Event.wait)."""
    deadline = time.monotonic() + seconds
    while not shutdown.requested.is_set() and (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, _SLEEP_SLICE))
