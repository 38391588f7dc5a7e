"""Job functions the tests enqueue; workers import them by name, as RQ's JSON serializer requires."""

from __future__ import annotations

from typing import Any


def add(a: int, b: int) -> int:
    return a + b


def describe(payload: dict[str, Any]) -> dict[str, Any]:
    return {"keys": sorted(payload), "size": len(payload)}


def flaky(key: str) -> str:
    """Fails with a transient upstream error until the Redis key `key` exists."""
    from rq import get_current_job

    from jobs.errors import TransientUpstreamError

    job = get_current_job()
    assert job is not None
    if not job.connection.exists(key):
        raise TransientUpstreamError("upstream answered 503")
    return "ok"


def broken() -> None:
    """Fails with a permanent error."""
    from jobs.errors import ValidationError

    raise ValidationError("bad input")


def fail_with(message: str) -> None:
    """Fails with a permanent error whose text is `message` (it lands in the job's traceback)."""
    from jobs.errors import ValidationError

    raise ValidationError(message)


def nap(seconds: float, mark: str = "") -> str:
    """Sleep, then (with `mark`) push the current job's id onto the Redis list `mark`."""
    import time

    from rq import get_current_job

    time.sleep(seconds)
    job = get_current_job()
    if mark and job is not None:
        job.connection.rpush(mark, job.id)
    return "rested"
