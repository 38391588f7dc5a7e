"""The one retry policy (as dramatiq's `Retries`): of refresh jobs (the retry sweeper, jobs.duties.retries),
of named tasks (RQ's `Retry`, jobs.named.definitions) and of upstream requests (jobs.upstream.retry).

An attempt that failed may be followed by at most `max_retries` more; retry number n waits
`backoff(n, base, factor, cap, jitter)` seconds (jobs.backoff), and happens only if `retry_when(attempt,
exc)` (when given) says so for the attempt that just failed and its exception.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from jobs.backoff import backoff

RetryWhen = Callable[[int, BaseException], bool]


@dataclass(frozen=True)
class RetryPolicy:
    """At most `max_retries` retries, the n-th after base * factor**(n-1) s, capped, with jitter; only
    those `retry_when(attempt, exc)` allows. The defaults are the refresh jobs' (the reference design's)."""

    base: float = 1.0
    factor: float = 2.0
    cap: float = 60.0
    max_retries: int = 3
    jitter: float = 0.2  # spreads jobs that failed together
    retry_when: RetryWhen | None = None

    def nominal(self, attempt: int) -> float:
        """The delay before retry number `attempt` (1-based), without jitter."""
        return backoff(attempt, self.base, self.factor, self.cap)

    def delay(self, attempt: int) -> float:
        """The delay before retry number `attempt` (1-based), jitter drawn."""
        return backoff(attempt, self.base, self.factor, self.cap, jitter=self.jitter)

    def allows(self, attempt: int, exc: BaseException | None = None) -> bool:
        """Whether failed attempt number `attempt` (1-based) is retried: within `max_retries`, and as
        `retry_when` says for its exception (no exception: only the count decides)."""
        if attempt > self.max_retries:
            return False
        return self.retry_when is None or exc is None or bool(self.retry_when(attempt, exc))

    def intervals(self) -> list[int]:
        """The delays of every retry, whole seconds, no jitter: what RQ's `Retry` takes."""
        cap = self.cap if math.isfinite(self.cap) else float(2**31)
        return [int(backoff(i, self.base, self.factor, cap)) for i in range(1, self.max_retries + 1)]
