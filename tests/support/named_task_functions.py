"""Named tasks the tests run; listed in REFRESHQ_TASK_MODULES by `named_env` so workers find them."""

from __future__ import annotations

import time
from typing import Any, Literal

from jobs.named import Priority, ScheduleSpec, current_run, task

TRACE = "test:trace"  # LIST the tasks append to, to show order and counts


def _trace(item: str) -> None:
    current_run().conn.rpush(TRACE, item)


@task(name="t-add", category="math", tags=("fast",))
def add(a: int, b: int) -> int:
    """Add two numbers."""
    _trace(f"add {a} {b}")
    return a + b


@task(name="t-step", category="flow", priority=Priority.HIGH)
def step(label: str) -> str:
    """Record a label (chains, batches)."""
    _trace(label)
    return label


@task(name="t-fail", category="flow", tags=("fast",))
def fail(message: str = "boom") -> None:
    """Always fails."""
    _trace(f"fail {message}")
    raise ValueError(message)


@task(name="t-slow", category="flow", priority=Priority.LOW)
def slow(seconds: float, label: str = "slow") -> str:
    """Sleep, recording start and end (overlap checks)."""
    _trace(f"start {label} {time.time()}")
    time.sleep(seconds)
    _trace(f"end {label} {time.time()}")
    return label


def _flaky_check() -> bool:
    _trace("validate")
    return True


def _before() -> None:
    _trace("before")


def _after(result: Any) -> None:
    _trace(f"after {result}")


def _on_failure(error: BaseException) -> None:
    current_run().conn.rpush(TRACE, f"on_failure {type(error).__name__}")


@task(name="t-flaky", retries=2, retry_delay=0, validate=_flaky_check, before=_before, after=_after,
      on_failure=_on_failure, history_limit=3)
def flaky(fail_times: int) -> str:
    """Fails its first `fail_times` attempts."""
    attempt = current_run().attempt
    if attempt <= fail_times:
        raise RuntimeError(f"attempt {attempt} fails")
    return f"ok on attempt {attempt}"


@task(name="t-refused", validate=lambda: False)
def refused() -> None:
    """Its environment check always says no."""


@task(name="t-limited", time_limit=1)
def limited() -> None:
    """Runs past its 1 s time limit."""
    time.sleep(5)


@task(name="t-daily", schedule=ScheduleSpec(cron="0 4 * * *", args=(1, 2)))
def daily(a: int, b: int) -> int:
    """A task with a default schedule."""
    return a * b


@task(name="t-typed", category="types")
def typed(
    count: int, ratio: float, label: str | None, flags: list[bool], weights: dict[str, float],
    mode: Literal["fast", "slow"] = "fast", anything=None, *rest: int, **more: str,  # anything: unannotated
) -> dict[str, Any]:
    """Every annotation the argument checker knows; returns what it got."""
    return {"count": count, "ratio": ratio, "label": label, "flags": flags, "weights": weights, "mode": mode,
            "anything": anything, "rest": list(rest), "more": more}


def _not_a_key_error(attempt: int, exc: BaseException) -> bool:
    return not isinstance(exc, KeyError)


@task(name="t-picky", retries=2, retry_delay=0, retry_when=_not_a_key_error)
def picky(kind: str) -> None:
    """Fails with a KeyError (final: its retry_when says no) or a ValueError (retried)."""
    raise KeyError(kind) if kind == "key" else ValueError(kind)
