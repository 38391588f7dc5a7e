"""Retrying one upstream request (jobs.upstream.retry), without a server: full-jitter delays within their
ceiling, a Retry-After honoured but capped, how many attempts are made, and the verdict when they run out."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from jobs.errors import (
    PermanentUpstreamError,
    RegionFailedError,
    TransientUpstreamError,
    UpstreamInconsistencyError,
)
from jobs.upstream.retry import Backoff, call_with_retries, region_verdict

BUSY = TransientUpstreamError("503")
DRAWS = 300


def delays(backoff: Backoff, attempt: int, error: TransientUpstreamError = BUSY) -> list[float]:
    return [backoff.delay(attempt, error) for _ in range(DRAWS)]


@pytest.mark.parametrize(("attempt", "ceiling"), [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (40, 10.0)])
def test_delays_are_full_jitter_under_a_doubling_capped_ceiling(attempt: int, ceiling: float) -> None:
    drawn = delays(Backoff(base=1.0, cap=10.0), attempt)
    assert all(0.0 <= d <= ceiling for d in drawn)
    # Spread over the whole range: threads that failed together do not come back together.
    assert min(drawn) < 0.2 * ceiling and max(drawn) > 0.8 * ceiling


def test_a_retry_after_is_a_floor_and_is_capped() -> None:
    backoff = Backoff(base=0.01, cap=0.02, retry_after_cap=60.0)
    assert all(d == 3.0 for d in delays(backoff, 1, TransientUpstreamError("429", retry_after=3.0)))
    assert all(d == 60.0 for d in delays(backoff, 1, TransientUpstreamError("429", retry_after=3600.0)))
    assert all(0.0 <= d <= 0.01 for d in delays(backoff, 1, TransientUpstreamError("429", retry_after=-5.0)))
    # A Retry-After shorter than the drawn delay does not shorten it.
    long = delays(Backoff(base=100.0, cap=100.0), 1, TransientUpstreamError("429", retry_after=1.0))
    assert all(1.0 <= d <= 100.0 for d in long) and max(long) > 50.0


def test_an_answer_that_contradicted_itself_is_asked_again_sooner() -> None:
    backoff = Backoff(base=10.0, cap=30.0, inconsistent_base=0.01)
    assert all(d <= 0.04 for d in delays(backoff, 3, UpstreamInconsistencyError("total changed")))
    assert max(delays(backoff, 3)) > 1.0  # other errors keep the base
    assert max(delays(Backoff(base=10.0), 1, UpstreamInconsistencyError("x"))) > 1.0  # unless one is set


def attempts(outcomes: list[BaseException | str]) -> tuple[Callable[[], str], list[int]]:
    """An attempt that raises or returns the given outcomes in turn, and the count of calls made."""
    calls = [0]

    def attempt() -> str:
        outcome = outcomes[calls[0]]
        calls[0] += 1
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return attempt, calls


FAST = Backoff(base=0.001, cap=0.001)


def test_transient_failures_are_retried_until_an_answer() -> None:
    attempt, calls = attempts([BUSY, BUSY, "answer"])
    slept: list[float] = []
    assert call_with_retries(attempt, what="GET /x", max_attempts=3, backoff=FAST, sleep=slept.append) == "answer"
    assert calls == [3] and len(slept) == 2


def test_out_of_attempts_the_last_error_is_the_cause() -> None:
    attempt, calls = attempts([BUSY, TransientUpstreamError("timed out"), "never asked"])
    slept: list[float] = []
    with pytest.raises(TransientUpstreamError, match=r"GET /x: failed after 2 attempts; last error: timed out") as e:
        call_with_retries(attempt, what="GET /x", max_attempts=2, backoff=FAST, sleep=slept.append)
    assert calls == [2] and len(slept) == 1  # no sleep after the last attempt
    assert str(e.value.__cause__) == "timed out"


def test_a_permanent_error_is_not_retried() -> None:
    attempt, calls = attempts([PermanentUpstreamError("404"), "never asked"])
    slept: list[float] = []
    with pytest.raises(PermanentUpstreamError, match="404"):
        call_with_retries(attempt, what="GET /x", max_attempts=5, backoff=FAST, sleep=slept.append)
    assert calls == [1] and slept == []


def test_at_least_one_attempt_is_made() -> None:
    attempt, calls = attempts(["answer"])
    assert call_with_retries(attempt, what="GET /x", max_attempts=0, backoff=FAST, sleep=lambda _: None) == "answer"
    assert calls == [1]


def test_only_the_given_errors_are_retried() -> None:
    attempt, calls = attempts([BUSY, "never asked"])
    with pytest.raises(TransientUpstreamError, match="503"):
        call_with_retries(attempt, what="GET /x", max_attempts=3, backoff=FAST, sleep=lambda _: None,
                          retry_on=UpstreamInconsistencyError)
    assert calls == [1]


def test_the_region_verdict_fails_a_region_that_kept_contradicting_itself() -> None:
    what = "hospitals of 110105"
    lied = region_verdict(what, 3, UpstreamInconsistencyError(f"{what}: total changed from 18 to 19 at page 2"))
    assert isinstance(lied, RegionFailedError)
    assert str(lied) == f"{what}: no consistent answer after 3 attempts; last: total changed from 18 to 19 at page 2"
    busy = region_verdict(what, 3, BUSY)
    assert type(busy) is TransientUpstreamError  # a busy server is retried later, as a whole job
    assert str(busy) == f"{what}: failed after 3 attempts; last error: 503"
    attempt, _calls = attempts([UpstreamInconsistencyError(f"{what}: repeated page")] * 2)
    with pytest.raises(RegionFailedError, match="no consistent answer after 2 attempts; last: repeated page"):
        call_with_retries(attempt, what=what, max_attempts=2, backoff=FAST, sleep=lambda _: None,
                          give_up=region_verdict)
