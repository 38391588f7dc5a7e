"""The previous layout's run functions, by their old dotted names, for jobs queued before an upgrade.

RQ stores a job's function and its callbacks by dotted name: runs, chain steps and batch members queued
by the old code name `jobs.runs.run_named_task` and `jobs.runs.on_run_failure`. Those jobs carry no
success callback (the old run function noted its end itself), so the old run function still does.
New runs use `jobs.named.runs` and the callbacks of what they belong to.
"""

from __future__ import annotations

from typing import Any

import redis
from rq import get_current_job
from rq.job import Job

from jobs.named import runs, schedules, workflows


def run_named_task(name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    result = runs.run_named_task(name, args, kwargs)
    job = get_current_job()
    if job is not None:
        schedules.on_run_success(job, job.connection, result)
        workflows.on_run_success(job, job.connection, result)
    return result


def on_run_failure(
    job: Job, connection: redis.Redis, exc_type: type[BaseException] | None = None,
    exc_value: BaseException | None = None, tb: Any = None,
) -> None:
    schedules.on_run_failure(job, connection, exc_type, exc_value, tb)
    workflows.on_run_failure(job, connection, exc_type, exc_value, tb)
