"""Failures are classified where they happen, by the exception's type, and the retry sweeper acts on that
record: in the work-horse (a job that raised), in the worker (its work-horse stopped or killed), in the
scheduler's cleanup of a dead worker's job. One backoff function serves every retry."""

from __future__ import annotations

import math
import os
import signal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import redis
from rq.command import send_stop_job_command
from rq.exceptions import AbandonedJobError
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer
from rq.timeouts import JobTimeoutException

from jobs import failures, keys, queues
from jobs.backoff import backoff
from jobs.config import Settings
from jobs.duties import abandoned, dead_letters
from jobs.duties.retries import RetryPolicy, sweep_failed_jobs
from jobs.errors import (
    PermanentUpstreamError,
    RegionFailedError,
    TransientUpstreamError,
    UpstreamInconsistencyError,
    ValidationError,
)
from jobs.redis_values import as_text_map
from tests.support.helpers import drain, horse_pids, wait_until, worker_process
from tests.support.named_helpers import registry

FAST = RetryPolicy(base=0.2, factor=2, cap=0.5, max_retries=3)


@pytest.mark.parametrize(
    ("exc_type", "kind"),
    [
        (TransientUpstreamError, failures.TRANSIENT),
        (UpstreamInconsistencyError, failures.TRANSIENT),
        (AbandonedJobError, failures.TRANSIENT),
        (redis.ConnectionError, failures.TRANSIENT),
        (redis.BusyLoadingError, failures.TRANSIENT),
        (httpx.ReadTimeout, failures.TRANSIENT),
        (ConnectionResetError, failures.TRANSIENT),
        (ValidationError, failures.PERMANENT),
        (PermanentUpstreamError, failures.PERMANENT),
        (RegionFailedError, failures.PERMANENT),
        (JobTimeoutException, failures.PERMANENT),
        (KeyError, failures.PERMANENT),
    ],
)
def test_the_kind_of_a_failure_follows_the_type_of_its_error(exc_type: type[BaseException], kind: str) -> None:
    assert failures.kind_of(exc_type) == kind


def test_a_permanent_error_whose_message_names_transient_errors_is_not_retried(conn: redis.Redis) -> None:
    # Matching names in the traceback text would call this transient: its message is all transient names.
    queue = queues.queue(conn, queues.NORMAL)
    job = queue.enqueue("tests.support.job_functions.fail_with", "TransientUpstreamError OSError")
    drain(conn, [queues.NORMAL])
    recorded = as_text_map(conn.hgetall(keys.job_failure(job.id)))
    assert recorded["kind"] == failures.PERMANENT
    assert recorded["exception"] == "jobs.errors.ValidationError"
    assert sweep_failed_jobs(conn, FAST, Settings.from_env()) == 1
    [dead] = dead_letters.list_dead(conn)
    assert (dead["job_id"], dead["kind"], dead["attempts"]) == (job.id, failures.PERMANENT, 1)
    assert not conn.exists(keys.job_failure(job.id))  # taken by the sweeper: a later failure is never mistaken for it


def test_a_failure_nobody_recorded_is_classified_from_rqs_text(conn: redis.Redis) -> None:
    """A failure of the previous layout, or of a job run by another worker, has no record."""
    job = queues.queue(conn, queues.NORMAL).enqueue("tests.support.job_functions.flaky", "never-set")
    drain(conn, [queues.NORMAL])
    conn.delete(keys.job_failure(job.id))
    assert sweep_failed_jobs(conn, FAST, Settings.from_env()) == 0
    state = as_text_map(conn.hgetall(keys.job_retry(job.id)))
    assert (state["kind"], state["decision"]) == (failures.TRANSIENT, "retry")
    assert "TransientUpstreamError" in state["last_error"]


def _abandon(conn: redis.Redis, queue_name: str) -> Job:
    """A started job whose worker died: its started-registry entry lapsed 5 s ago."""
    queue = queues.queue(conn, queue_name)
    job = queue.enqueue("tests.support.job_functions.add", 1, 2)
    queue.remove(job.id)
    job.set_status(JobStatus.STARTED)
    with conn.pipeline() as pipe:
        execution = Execution.create(job, ttl=1, pipeline=pipe)
        pipe.execute()
    lapsed = (datetime.now(UTC) - timedelta(seconds=5)).timestamp()
    conn.zadd(StartedJobRegistry(queue=queue).key, {f"{job.id}:{execution.id}": lapsed})
    return job


def test_the_scheduler_records_a_dead_workers_job_as_transient_and_it_resumes_first(conn: redis.Redis) -> None:
    queue = queues.queue(conn, queues.NORMAL)
    waiting = queue.enqueue("tests.support.job_functions.add", 3, 4)
    job = _abandon(conn, queues.NORMAL)
    abandoned.clean_started_registries(conn)
    recorded = as_text_map(conn.hgetall(keys.job_failure(job.id)))
    assert (recorded["kind"], recorded["exception"]) == (failures.TRANSIENT, failures.ABANDONED)
    assert job.id in queue.failed_job_registry.get_job_ids()
    assert sweep_failed_jobs(conn, RetryPolicy(base=0, max_retries=3), Settings.from_env()) == 1  # a retry, due at once
    assert as_text_map(conn.hgetall(keys.job_retry(job.id)))["kind"] == failures.TRANSIENT
    assert queue.job_ids == [job.id, waiting.id]  # at the front: a lost worker's job resumes first


@pytest.fixture
def slow_run(conn: redis.Redis, tenv: dict[str, str]) -> Iterator[tuple[Job, int]]:
    """A named-task run in progress on a `refreshq worker`, and the worker's pid."""
    run_id = registry().get("t-slow").delay(60)
    with worker_process(tenv, "--queue", "low") as worker:
        job = Job.fetch(run_id, connection=conn, serializer=JSONSerializer)
        wait_until(lambda: job.get_status(refresh=True) == JobStatus.STARTED and horse_pids(worker.pid), 30,
                   what="the run to start")
        yield job, worker.pid


def _wait_failed(conn: redis.Redis, job: Job) -> None:
    registry_ = queues.queue(conn, queues.LOW).failed_job_registry
    wait_until(lambda: job.id in registry_.get_job_ids(), 20, what=f"{job.id} in the failed registry")


def test_a_stopped_run_is_recorded_by_its_worker_as_never_retried(conn: redis.Redis, slow_run: tuple[Job, int]) -> None:
    job, _worker = slow_run
    send_stop_job_command(conn, job.id)
    _wait_failed(conn, job)
    recorded = as_text_map(conn.hgetall(keys.job_failure(job.id)))
    assert recorded["kind"] == failures.NEVER and "stopped" in recorded["error"]
    assert sweep_failed_jobs(conn, FAST, Settings.from_env()) == 1
    assert dead_letters.list_dead(conn)[0]["kind"] == failures.NEVER


def test_a_killed_work_horse_is_recorded_by_its_worker(conn: redis.Redis, slow_run: tuple[Job, int]) -> None:
    job, worker = slow_run
    for pid in horse_pids(worker):
        os.kill(pid, signal.SIGKILL)
    _wait_failed(conn, job)
    recorded = as_text_map(conn.hgetall(keys.job_failure(job.id)))
    assert recorded["kind"] == failures.PERMANENT and "Work-horse terminated" in recorded["error"]


def test_one_backoff_function_caps_jitters_and_never_overflows() -> None:
    assert [backoff(n, 1.0) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert backoff(30, 1.0, cap=60.0) == 60.0
    assert backoff(10_000, 1.0, 10.0, cap=5.0) == 5.0  # 10**9999 is no float: the cap answers
    assert backoff(10_000, 1.0) == math.inf  # no cap: as long as it gets
    assert backoff(3, 0.0) == 0.0
    full = [backoff(3, 1.0, jitter=1.0) for _ in range(200)]
    assert all(0.0 <= d <= 4.0 for d in full) and min(full) < 1.0 < 3.0 < max(full)
    # Its three users: the sweeper (20 % jitter), upstream requests (full jitter), named tasks' RQ retries.
    assert all(0.8 * 4 <= RetryPolicy().delay(3) <= 4 for _ in range(50))
    assert registry_intervals() == [30, 60, 120]


def registry_intervals() -> list[int]:
    from jobs.named.definitions import task_retry

    return task_retry(3, 30, 2.0).intervals()
