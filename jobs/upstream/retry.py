"""Retries of upstream requests with exponential backoff and full jitter (a RetryPolicy, jobs.retry_policy),
shared by the HTTP and the LLM clients."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from jobs.errors import RegionFailedError, TransientUpstreamError, UpstreamError, UpstreamInconsistencyError
from jobs.retry_policy import RetryPolicy

T = TypeVar("T")
Sleep = Callable[[float], None]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backoff:
    """Delays between attempts: full jitter keeps many threads from retrying in lockstep."""

    base: float = 0.5  # ceiling of the first delay, seconds; doubles each attempt
    cap: float = 30.0  # ceiling of any one computed delay
    retry_after_cap: float = 60.0  # a Retry-After longer than this is not believed
    # The same after an answer that contradicted itself (None: `base`). A model's slip is no sign of
    # load, so asking again soon costs nothing; a server's stale total may need a moment to settle.
    inconsistent_base: float | None = None

    def policy(self, base: float | None = None) -> RetryPolicy:
        """The retry policy of a request's delays (the attempts are counted by call_with_retries)."""
        return RetryPolicy(base=self.base if base is None else base, factor=2.0, cap=self.cap, jitter=1.0)

    def delay(self, attempt: int, error: TransientUpstreamError) -> float:
        """How long to wait after failed attempt number `attempt` (1-based)."""
        base = self.base
        if self.inconsistent_base is not None and isinstance(error, UpstreamInconsistencyError):
            base = self.inconsistent_base
        delay = self.policy(base).delay(attempt)
        if error.retry_after is not None:
            # The upstream said when it will take us again: never come back earlier than that.
            delay = max(delay, min(max(error.retry_after, 0.0), self.retry_after_cap))
        return delay


def exhausted(what: str, attempts: int, last: TransientUpstreamError) -> UpstreamError:
    """The default verdict once retries run out: still a transient error, with the last cause."""
    return TransientUpstreamError(f"{what}: failed after {attempts} attempts; last error: {last}")


def region_verdict(what: str, attempts: int, last: TransientUpstreamError) -> UpstreamError:
    """The verdict once retries run out: an upstream that kept contradicting itself has failed that region
    for good (retrying the job later would only ask the same liar again); anything else stays transient."""
    if isinstance(last, UpstreamInconsistencyError):
        detail = str(last).removeprefix(f"{what}: ")
        return RegionFailedError(f"{what}: no consistent answer after {attempts} attempts; last: {detail}")
    return exhausted(what, attempts, last)


def call_with_retries(
    attempt: Callable[[], T],
    *,
    what: str,
    max_attempts: int,
    backoff: Backoff,
    sleep: Sleep = time.sleep,
    give_up: Callable[[str, int, TransientUpstreamError], UpstreamError] = exhausted,
    retry_on: type[TransientUpstreamError] = TransientUpstreamError,
) -> T:
    """Run `attempt` until it returns, retrying `retry_on` errors up to `max_attempts` times.

    Any other exception (PermanentUpstreamError included) passes through at once. `what` names the
    request in messages and logs, so it must never contain a secret.
    """
    attempts = max(1, max_attempts)
    for number in range(1, attempts + 1):
        try:
            return attempt()
        except retry_on as error:
            if number == attempts:
                raise give_up(what, attempts, error) from error
            delay = backoff.delay(number, error)
            log.info("%s failed (attempt %d/%d): %s; retrying in %.2fs", what, number, attempts, error, delay)
            sleep(delay)
    raise AssertionError("unreachable: the loop returns or raises")
