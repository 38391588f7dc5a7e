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


def count_then_fail(mark: str) -> None:
    """Push a line onto the list `mark`, then fail (counts the attempts)."""
    from rq import get_current_job

    job = get_current_job()
    assert job is not None
    job.connection.rpush(mark, "run")
    raise RuntimeError("always fails")


def stubborn(seconds: float) -> str:
    """Runs `seconds` whatever happens: swallows RQ's timeout exception (a job ignoring its time limit)."""
    import contextlib
    import time

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        with contextlib.suppress(Exception):  # the point: RQ's JobTimeoutException is an Exception
            time.sleep(0.05)
    return "done anyway"


def on_success(job: Any, connection: Any, result: Any, *args: Any, **kwargs: Any) -> None:
    connection.rpush("callbacks", f"success {job.id} {result}")


def on_failure(job: Any, connection: Any, exc_type: Any, exc_value: Any, tb: Any, *args: Any, **kwargs: Any) -> None:
    connection.rpush("callbacks", f"failure {job.id} {exc_type.__name__}")


def hang_once(mark: str) -> str:
    """The first run hangs (for a kill to catch it mid-job); a retry returns at once."""
    import time

    from rq import get_current_job

    job = get_current_job()
    assert job is not None
    if job.connection.set(mark, "1", nx=True):
        time.sleep(120)
    return "second time lucky"


def hold(key: str, mark: str = "") -> str:
    """Wait (at most 60 s) for an item pushed onto the Redis list `key`, then (with `mark`) push the current
    job's id onto the list `mark`: a job that ends when the test says, not after a time that a busy machine
    can outlast."""
    from rq import get_current_job

    job = get_current_job()
    assert job is not None
    job.connection.blpop([key], timeout=60)
    if mark:
        job.connection.rpush(mark, job.id)
    return "released"
