"""What refreshq's fast worker (workers.fast.FastWorker) changes in RQ's SimpleWorker, beyond
jobs.rqseam.worker, and RQ 2.12's bookkeeping of a job replayed in its process.

The worker runs its own loop (`run`, in place of RQ's `work`), and a stop-job or kill-horse command
interrupts the job in this process (`interrupt_job`, in place of killing a horse). The writes RQ makes when a
job starts and when it succeeds are made by RQ's own methods into a pipeline that is only recorded
(`record_start`, `record_success`, `record_idle`): the caller sends them later in one round trip. What is
rare goes through RQ's own methods unchanged: failures, Retry results, repeats, results kept 0 s.

RQ 3 (its main branch) changes here: `Job.perform` no longer sends a PERSIST and RQ's `_job_stack` is gone
(a context variable Job.perform sets), so `call_function` becomes `job.perform()` and `record_start` drops its
PERSIST; the worker's `execution` becomes a property over its executions, and `set_current_job_id` and
`set_current_job_working_time` are gone (`record_start`, `keep_alive`); `maintain_heartbeats`,
`handle_job_success` and `cleanup_execution` take the execution (`keep_alive`, `perform_recorded`,
`record_success`).
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from typing import Any

from rq import Queue
from rq import job as rq_job
from rq.executions import Execution
from rq.job import Job, JobStatus, Retry
from rq.timeouts import JobTimeoutException
from rq.utils import now
from rq.worker import SimpleWorker, WorkerStatus

from jobs.rqseam.worker import WorkerSeam

STOPPED_TEXT = "Job stopped by user, work-horse terminated."  # RQ's text (Worker.monitor_work_horse)


class NonForkingWorker(WorkerSeam, SimpleWorker):
    """RQ's SimpleWorker with refreshq's loop and RQ's bookkeeping recorded; see the module's docstring."""

    # -- hooks -----------------------------------------------------------------------------------------------

    def run(self, burst: bool, logging_level: str | None) -> bool:
        """The work loop; True when it ran any job."""
        return bool(super().work(burst, logging_level))

    def interrupt_job(self) -> None:
        """Stop the job running in this process (RQ's stop-job and kill-horse commands)."""

    def job_in_hand(self) -> bool:
        """Whether a job is started and not yet ended (RQ then sees a "horse" to kill: this process)."""
        return False

    def entering_function(self, job: Job) -> None:
        """Called just before `job`'s function runs (it may raise to stop the job there)."""

    def left_function(self, job: Job) -> None:
        """Called when `job`'s function has returned or raised."""

    def stopped_by_user(self, job: Job, exc: BaseException | None) -> bool:
        """Whether `exc`, raised in `job`, is the job being stopped by RQ's stop-job command."""
        return self.stopped_job_id == job.id

    def job_stopped(self, job: Job) -> None:
        """Called when a stopped job's end is about to be recorded (after its stopped callback)."""

    # -- RQ's methods ----------------------------------------------------------------------------------------

    def work(self, burst: bool = False, logging_level: str | None = "INFO", *args: Any, **kwargs: Any) -> bool:
        return self.run(burst, logging_level)

    def kill_horse(self, sig: signal.Signals = signal.SIGKILL) -> None:
        self.interrupt_job()

    @property
    def horse_pid(self) -> int:
        return os.getpid() if self.job_in_hand() else 0  # so RQ's kill-horse command reaches kill_horse

    # -- RQ's bookkeeping, recorded ----------------------------------------------------------------------------

    def recorder(self) -> Any:
        """A pipeline that records commands; the caller sends them (its `command_stack`)."""
        return self.connection.pipeline(transaction=False)

    def record_start(self, job: Job) -> Any:
        """RQ's writes when a job starts: prepare_execution, prepare_job_execution, Job.perform's PERSIST.
        Sets the worker's execution (RQ's `execution`)."""
        rec = self.recorder()
        ttl = self.get_heartbeat_ttl(job)
        self.execution = Execution.create(job, ttl, pipeline=rec, worker_name=self.name)
        self.set_state(WorkerStatus.BUSY, pipeline=rec)
        self.set_current_job_id(job.id, pipeline=rec)
        self.set_current_job_working_time(0, pipeline=rec)
        self.heartbeat(ttl, pipeline=rec)
        job.heartbeat(now(), ttl, pipeline=rec)
        job.prepare_for_execution(self.name, pipeline=rec)
        rec.persist(job.key)
        return rec

    def record_idle(self, rec: Any = None) -> Any:
        """RQ's writes after each job (execute_job, then the work loop's heartbeat)."""
        rec = rec if rec is not None else self.recorder()
        self.set_state(WorkerStatus.IDLE, pipeline=rec)
        self.heartbeat(pipeline=rec)
        return rec

    def record_success(self, job: Job, result_ttl: int) -> Any:
        """RQ's writes of Worker.handle_job_success, then record_idle's (dependents are the caller's)."""
        rec = self.recorder()
        job.heartbeat(now(), job.success_callback_timeout, pipeline=rec)  # handle_execution_ended's
        self.increment_successful_job_count(pipeline=rec)
        self.increment_total_working_time(job.ended_at - job.started_at, rec)  # type: ignore[operator]
        execution = self.execution
        job._handle_success(result_ttl, pipeline=rec, worker_name=self.name,
                            execution_id=execution.id if execution else None,
                            execution_started_at=execution.created_at if execution else None,
                            execution_ended_at=job.ended_at)
        job.cleanup(result_ttl, pipeline=rec, remove_from_queue=False)
        self.cleanup_execution(job, pipeline=rec)
        return self.record_idle(rec)

    def keep_alive(self, job: Job, elapsed: float) -> None:
        """What RQ's forking worker writes while its horse runs: the working time and every heartbeat."""
        self.set_current_job_working_time(elapsed)
        self.maintain_heartbeats(job)

    def perform_recorded(self, job: Job, queue: Queue) -> tuple[Any, str, bool]:
        """Worker.perform_job, in this process, the started job's bookkeeping sent already (record_start):
        (the pipeline of writes still to send, the dependents key to look at with them, success)."""
        try:
            with self.death_penalty_class(job.timeout or Queue.DEFAULT_TIMEOUT, JobTimeoutException, job_id=job.id):
                value = self.call_function(job)
            job.ended_at = now()
            if isinstance(value, Retry):
                self.handle_execution_ended(job, queue, job.success_callback_timeout)
                self.handle_job_retry(job, queue, value, queue.started_job_registry, self.execution)
                return self.record_idle(), "", False
            job._status = JobStatus.FINISHED
            job.execute_success_callback(self.death_penalty_class, value)
            result_ttl = job.get_result_ttl(self.default_result_ttl)
            if result_ttl == 0 or (job.repeats_left is not None and job.repeats_left > 0):
                self.handle_execution_ended(job, queue, job.success_callback_timeout)
                self.handle_job_success(job, queue, queue.started_job_registry)
                return self.record_idle(), "", True
            return self.record_success(job, result_ttl), job.dependents_key, True
        except BaseException:
            self.fail_in_process(job, queue, sys.exc_info())
            if isinstance(sys.exc_info()[1], SystemExit):
                raise
            return self.record_idle(), "", False

    def call_function(self, job: Job) -> Any:
        """Job.perform without its PERSIST (sent with the start): the job is on RQ's job stack, so
        get_current_job() works."""
        rq_job._job_stack.push(job)  # type: ignore[no-untyped-call]
        try:
            self.entering_function(job)
            job._result = job._execute()
        finally:
            self.left_function(job)
            rq_job._job_stack.pop()  # type: ignore[no-untyped-call]
        return job._result

    def fail_in_process(self, job: Job, queue: Queue, exc_info: Any) -> None:
        """The except branch of Worker.perform_job, or for a stopped job Worker.monitor_work_horse's."""
        job._status = JobStatus.FAILED
        if self.stopped_by_user(job, exc_info[1]):
            job.ended_at = now()
            if job.stopped_callback:
                job.execute_stopped_callback(self.death_penalty_class)
            self.job_stopped(job)
            self.handle_job_failure(job, queue=queue, exc_string=STOPPED_TEXT)
            return
        self.handle_execution_ended(job, queue, job.failure_callback_timeout)
        exc_string = "".join(traceback.format_exception(*exc_info))
        try:
            job.execute_failure_callback(self.death_penalty_class, *exc_info)
        except BaseException:
            exc_info = sys.exc_info()
            exc_string = "".join(traceback.format_exception(*exc_info))
        self.handle_exception(job, *exc_info)
        self.handle_job_failure(job=job, exc_string=exc_string, queue=queue,
                                started_job_registry=queue.started_job_registry)
