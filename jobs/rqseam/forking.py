"""What refreshq's forking worker (workers.RefreshqWorker) changes in RQ's Worker, beyond jobs.rqseam.worker:
each RQ method overridden here calls a hook in refreshq's own signature.

RQ 3 (its main branch) changes here: `perform_job` and `monitor_work_horse` take the execution (passed on to
`performing`, which `perform_job` reads from `self.execution` today).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import redis
from rq import Queue, Worker
from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.exceptions import StopRequested
from rq.executions import Execution
from rq.job import Job

from jobs.rqseam.worker import WorkerSeam

# The network errors of a worker that lost its server (a refused write is waited out: jobs/reconnect.py).
LOST_SERVER = (redis.ConnectionError, redis.TimeoutError)


class ForkingWorker(WorkerSeam, Worker):
    """RQ's forking Worker with refreshq's hooks."""

    def forget_horse(self) -> None:
        """The work-horse is gone (reaped by the caller): RQ's horse pid is cleared."""
        self._horse_pid = 0

    # -- hooks -----------------------------------------------------------------------------------------------

    def next_job(self, timeout: int | None) -> tuple[Job, Queue] | None:
        """The next job to run and its queue; None ends the work loop (with `timeout` None, a burst's end)."""
        result: tuple[Job, Queue] | None = super().dequeue_job_and_maintain_ttl(timeout)
        return result

    def execution_prepared(self, job: Job) -> None:
        """Called once `job`'s execution is registered as started, before the work-horse forks."""

    def heartbeat_sent(self, pipeline: Any) -> None:
        """Called after each heartbeat of the worker, with the pipeline it went on (or None: sent)."""

    def install_horse_signals(self) -> None:
        """In a new work-horse: its signal handlers."""
        super().setup_work_horse_signals()  # type: ignore[no-untyped-call]

    @contextlib.contextmanager
    def booting(self) -> Iterator[None]:
        """Around RQ's bootstrap (registration, the command channel)."""
        yield

    @contextlib.contextmanager
    def performing(self, job: Job, queue: Queue, execution: Execution | None) -> Iterator[None]:
        """In the work-horse, around RQ's run of `job` and the recording of its end."""
        yield

    @contextlib.contextmanager
    def monitoring(self, job: Job) -> Iterator[None]:
        """In the worker, around RQ's watch over the work-horse running `job` (until the horse has exited)."""
        yield

    def warm_shutdown_requested(self) -> None:
        """Called after RQ has logged a warm shutdown request (the worker may be busy)."""

    def server_lost_while_stopping(self, job: Job, exc: Exception) -> bool:
        """The server went away while `job` ran; True: the worker stops now (StopRequested), leaving the job
        to crash recovery; False: the error goes on to RQ's work loop (which quits)."""
        return False

    def stop_write_failed(self, what: str, exc: redis.RedisError) -> bool:
        """A Redis write of RQ's stop (`what`: "shutdown date", "unregister") failed; True: go on without it."""
        return False

    # -- RQ's methods ----------------------------------------------------------------------------------------

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        return self.next_job(timeout)

    def prepare_execution(self, job: Job) -> Any:
        execution = super().prepare_execution(job)
        self.execution_prepared(job)
        return execution

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        super().heartbeat(timeout, pipeline)
        self.heartbeat_sent(pipeline)

    def setup_work_horse_signals(self) -> None:
        self.install_horse_signals()

    def bootstrap(
        self,
        logging_level: str | None = "INFO",
        date_format: str = DEFAULT_LOGGING_DATE_FORMAT,
        log_format: str = DEFAULT_LOGGING_FORMAT,
    ) -> None:
        with self.booting():
            super().bootstrap(logging_level, date_format, log_format)

    def perform_job(self, job: Job, queue: Queue) -> bool:
        with self.performing(job, queue, self.execution):
            return bool(super().perform_job(job, queue))

    def monitor_work_horse(self, job: Job, queue: Queue) -> None:
        with self.monitoring(job):
            super().monitor_work_horse(job, queue)

    def handle_warm_shutdown_request(self) -> None:
        super().handle_warm_shutdown_request()  # type: ignore[no-untyped-call]
        self.warm_shutdown_requested()

    def execute_job(self, job: Job, queue: Queue) -> None:
        try:
            super().execute_job(job, queue)
        except LOST_SERVER as exc:
            if not self.server_lost_while_stopping(job, exc):
                raise
            raise StopRequested from None

    def set_shutdown_requested_date(self) -> None:
        try:
            super().set_shutdown_requested_date()  # type: ignore[no-untyped-call]
        except redis.RedisError as exc:
            if not self.stop_write_failed("shutdown date", exc):
                raise

    def teardown(self) -> None:
        try:
            super().teardown()  # type: ignore[no-untyped-call]
        except redis.RedisError as exc:
            if not self.stop_write_failed("unregister", exc):
                raise
