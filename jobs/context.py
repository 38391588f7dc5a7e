"""The job context: what a job needs from its process, built once per worker process (like arq's `ctx`).

A refreshq worker builds it from the settings it was started with, before it forks: every work-horse
runs its job with it (workers.RefreshqWorker), so no job function reads the environment. Settings are
read from the environment only where a process or a library call starts (tests/unit/test_settings_reads.py
lists those places); everything below them takes the settings it is given.
"""

from __future__ import annotations

from dataclasses import dataclass

from rq import get_current_job
from rq.job import Job

from jobs.config import Settings
from jobs.errors import TaskExecutionError


@dataclass(frozen=True)
class JobContext:
    """What every job of one worker process shares, and, while a job runs, which execution of it this is."""

    settings: Settings
    # RQ's key of the running execution ("<job id>:<execution id>") and the started registry holding it:
    # the execution's fencing token (jobs.refresh.fence). Empty outside refreshq's worker.
    execution: str = ""
    started_registry: str = ""


_installed: JobContext | None = None


def install(context: JobContext | None) -> JobContext | None:
    """Make `context` the one jobs of this process see (None: none); returns the previous one."""
    global _installed
    previous, _installed = _installed, context
    return previous


def current() -> JobContext:
    """The worker's context inside a work-horse. A job run by a worker that is not refreshq's (RQ's own
    `rq worker`) found none installed: there the job function is where refreshq's code starts, and the
    settings are read from the environment for it."""
    return _installed if _installed is not None else JobContext(Settings.from_env())


def process_settings() -> Settings:
    """The settings of a library call made without any (`TaskManager()`, `some_task.delay()`): the worker's
    in a work-horse, else read from the environment now (each call sees the environment as it is then).
    Only the library's entry points call it, once per call, and pass the result down."""
    return _installed.settings if _installed is not None else Settings.from_env()


def running_job() -> tuple[Job, JobContext]:
    """The RQ job this code runs in, and its context; TaskExecutionError outside a job."""
    job = get_current_job()
    if job is None:
        raise TaskExecutionError("job functions run inside an RQ job")
    return job, current()
