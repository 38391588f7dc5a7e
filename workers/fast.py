"""The fast mode for short named tasks (`refreshq worker --fast`): no fork per job, several jobs claimed
at once, and RQ's bookkeeping of each job shipped in one round trip.

RQ's SimpleWorker does not fork but pays ~15 round trips per job (dequeue, fetch, prepare, start, the
success transaction, state, heartbeats). Here the writes are RQ's own: its methods (Execution.create,
Job.prepare_for_execution, Job._handle_success, cleanup_execution, ...) write into a pipeline that is
only recorded, and workers.claims.STEP runs the recorded commands of the job that ended together with
the start of the next claimed one, in one script, after checking the suspensions. So Job.fetch, the
registries, results, `rq info` and rq-dashboard see exactly what RQ's worker leaves. What is rare goes
through RQ's own code unchanged: failures, Retry results, repeats, results kept 0 s, stop-job commands
(RQ's handler; `kill_horse` interrupts the job instead of a horse), and dependents (enqueued with RQ's
Queue.enqueue_dependents when STEP, atomically with the finish, counts any).

Unlike SimpleWorker, a long job still heartbeats (workers.monitor), so a worker killed mid-job is seen
within seconds, and its time limit holds even if the job swallows RQ's timeout exception. Refresh jobs
keep the forking worker: a fast worker refuses the refresh queue.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from types import FrameType
from typing import Any

import redis
from rq import Queue
from rq.executions import Execution
from rq.job import Job, JobStatus, Retry, _job_stack
from rq.serializers import JSONSerializer
from rq.timeouts import JobTimeoutException
from rq.utils import now
from rq.worker import SimpleWorker, WorkerStatus

from jobs import context, failures, shutdown
from jobs import queues as queue_names
from jobs.config import Settings
from jobs.duties import abandoned
from jobs.errors import ValidationError
from jobs.reconnect import REFUSALS
from jobs.workforce import check_queues
from workers import HEARTBEAT_GRACE, JOB_MONITORING_INTERVAL, WARM_SHUTDOWN_BUDGET, preload_job_modules
from workers.channel import ChannelMixin
from workers.claims import BLOCK_SECONDS, Claimer, encode
from workers.drain import DrainMixin
from workers.monitor import INTERRUPT_SIGNAL, JobInterrupted, Monitor
from workers.takeover import TakeoverMixin

BATCH = 20  # jobs claimed at once; the rest of a batch goes back to its queue once a job runs long
FAST_QUEUES = tuple(q for q in queue_names.ALL_QUEUES if q != queue_names.REFRESH)
STOPPED_TEXT = "Job stopped by user, work-horse terminated."  # RQ's text (Worker.monitor_work_horse)


class FastWorker(ChannelMixin, DrainMixin, TakeoverMixin, SimpleWorker):
    """A non-forking RQ worker that batches RQ's bookkeeping; see the module's docstring."""

    pool_name = ""
    job_context: context.JobContext | None = None
    _running: str | None = None  # id of the job whose function is executing (the interrupt's guard)
    _interrupt_id: str | None = None
    _current: tuple[Job, Queue, float] | None = None  # (job, queue, started: monotonic)
    _claimer: Claimer | None = None
    monitor_deadline: tuple[str, float] | None = None  # (job id, monotonic): interrupt it then (SIGTERM)
    _ended_execution: tuple[str, str] = ("", "")  # (started registry, member) of the job whose end is sent next

    def get_heartbeat_ttl(self, job: Job) -> int:
        return int(self.job_monitoring_interval) + HEARTBEAT_GRACE  # the monitor heartbeats meanwhile

    @property
    def claimer(self) -> Claimer:
        if self._claimer is None:
            self._claimer = Claimer(self.connection, self.name, self.pool_name, self.serializer)
        return self._claimer

    def clean_registries(self) -> None:
        # RQ's maintenance judges heartbeats too: not while writes are refused, nor soon after (jobs/reconnect.py).
        if not REFUSALS.within():
            super().clean_registries()  # type: ignore[no-untyped-call]

    def reorder_queues(self, reference_queue: Queue) -> None:
        by_name = {q.name: q for q in self.queues}
        current = tuple(q.name for q in self._ordered_queues)
        order = queue_names.dequeue_order(tuple(by_name), reference_queue.name, current)
        self._ordered_queues = [by_name[name] for name in order]

    def work(self, burst: bool = False, logging_level: str | None = "INFO", *args: Any, **kwargs: Any) -> bool:
        """RQ's work loop, a batch of claimed jobs at a time (RQ's dequeue options do not apply)."""
        self.bootstrap(logging_level)
        self._install_signal_handlers()  # type: ignore[no-untyped-call]
        self.install_drain_handler()
        if shutdown.requested.is_set():  # a stop while it started, seen by the start-up handler only
            self._stop_requested = True
        signal.signal(INTERRUPT_SIGNAL, self._interrupt)
        previous = context.install(self.job_context)  # for the jobs of this process, while it works
        self._names = [q.name for q in self.queues]
        self._pending: collections.deque[tuple[Job, Queue]] = collections.deque()
        self.monitor_lock = threading.Lock()
        monitor = Monitor(self)
        monitor.start()
        done = 0
        try:
            while not self._stop_requested:
                if self.should_run_maintenance_tasks:
                    self.run_maintenance_tasks()  # type: ignore[no-untyped-call]
                got = self.claimer.claim(self._ordered_queues, BATCH, None if burst else BLOCK_SECONDS)
                if got.jobs:
                    done += self._run_batch(got.jobs)
                elif burst:
                    break
                else:
                    self.set_state(WorkerStatus.SUSPENDED if got.held else WorkerStatus.IDLE)
                    self.heartbeat()
        finally:
            monitor.stop()
            with self.monitor_lock:
                self._give_back(always=True)
            self.teardown()  # type: ignore[no-untyped-call]
            context.install(previous)
        return bool(done)

    def _give_back(self, always: bool = False) -> None:
        if self._pending or always:
            self._pending.clear()
            with contextlib.suppress(redis.RedisError):
                self.claimer.release(self._names)

    def _run_batch(self, batch: Sequence[tuple[Job, Queue]]) -> int:
        version = self.get_redis_server_version()  # type: ignore[no-untyped-call]
        for claimed, _queue in batch:
            claimed.redis_server_version = version  # else each Job.save asks the server (INFO)
        self._pending.extend(batch)
        ended: list[Any] = [0]
        job: Job | None = None
        queue: Queue | None = None
        dependents, ok = "", False
        count = 0
        while True:
            nxt = self._step(ended, dependents, job, queue, ok)
            if nxt is None:
                break
            job, queue = nxt
            execution = self.execution  # the one _step started; RQ's own failure path clears it
            ended, dependents, ok = self._perform(job, queue)
            self._ended_execution = (queue.started_job_registry.key, execution.composite_key if execution else "")
            count += 1
        if queue is not None:
            self.reorder_queues(queue)
        self._give_back()
        return count

    def _step(self, ended: list[Any], dependents: str, job: Job | None, queue: Queue | None,
              ok: bool) -> tuple[Job, Queue] | None:
        """The ended job's bookkeeping and the next claimed job's start, in one round trip."""
        with self.monitor_lock:
            nxt = self._pending.popleft() if self._pending and not self._stop_requested else None
            start = self._start_commands(*nxt) if nxt else []
            waiting, started = self.claimer.step(
                self._names, ended, dependents, (nxt[1].name, nxt[0].id) if nxt else None, start,
                self._ended_execution if job is not None else ("", ""))
            self._current = (nxt[0], nxt[1], time.monotonic()) if nxt and started else None
            if nxt and not started:
                self._pending.clear()  # the script gave every claim back: a suspension holds
        if job is not None and queue is not None:
            if waiting > 0:
                queue.enqueue_dependents(job)
            if ok:
                job.send_webhooks(JobStatus.FINISHED)
        return nxt if started else None

    def _record(self) -> Any:
        return self.connection.pipeline(transaction=False)

    def _start_commands(self, job: Job, queue: Queue) -> list[Any]:
        """RQ's writes when a job starts: prepare_execution, prepare_job_execution, Job.perform's PERSIST."""
        rec = self._record()
        ttl = self.get_heartbeat_ttl(job)
        self.execution = Execution.create(job, ttl, pipeline=rec, worker_name=self.name)
        self.set_state(WorkerStatus.BUSY, pipeline=rec)
        self.set_current_job_id(job.id, pipeline=rec)
        self.set_current_job_working_time(0, pipeline=rec)
        self.heartbeat(ttl, pipeline=rec)
        job.heartbeat(now(), ttl, pipeline=rec)
        job.prepare_for_execution(self.name, pipeline=rec)
        rec.persist(job.key)
        return encode(rec.command_stack)

    def _idle_commands(self, rec: Any = None) -> list[Any]:
        """RQ's writes after each job (execute_job, then the work loop's heartbeat)."""
        rec = rec if rec is not None else self._record()
        self.set_state(WorkerStatus.IDLE, pipeline=rec)
        self.heartbeat(pipeline=rec)
        return encode(rec.command_stack)

    def _success_commands(self, job: Job, result_ttl: int) -> list[Any]:
        """RQ's writes of Worker.handle_job_success (dependents are counted by STEP instead)."""
        rec = self._record()
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
        return self._idle_commands(rec)

    def _perform(self, job: Job, queue: Queue) -> tuple[list[Any], str, bool]:
        """Worker.perform_job, in this process: (the commands to send, the dependents key, success)."""
        try:
            with self.death_penalty_class(job.timeout or Queue.DEFAULT_TIMEOUT, JobTimeoutException, job_id=job.id):
                value = self._execute(job)
            job.ended_at = now()
            if isinstance(value, Retry):
                self.handle_execution_ended(job, queue, job.success_callback_timeout)
                self.handle_job_retry(job, queue, value, queue.started_job_registry, self.execution)
                return self._idle_commands(), "", False
            job._status = JobStatus.FINISHED
            job.execute_success_callback(self.death_penalty_class, value)
            result_ttl = job.get_result_ttl(self.default_result_ttl)
            if result_ttl == 0 or (job.repeats_left is not None and job.repeats_left > 0):
                self.handle_execution_ended(job, queue, job.success_callback_timeout)
                self.handle_job_success(job, queue, queue.started_job_registry)
                return self._idle_commands(), "", True
            return self._success_commands(job, result_ttl), job.dependents_key, True
        except BaseException:
            self._fail(job, queue, sys.exc_info())
            if isinstance(sys.exc_info()[1], SystemExit):
                raise
            return self._idle_commands(), "", False

    def _execute(self, job: Job) -> Any:
        """Job.perform without its PERSIST (sent with the start): the job is on RQ's job stack, so
        get_current_job() works, and interruptible while its function runs."""
        _job_stack.push(job)  # type: ignore[no-untyped-call]
        try:
            self._running = job.id
            if self._interrupt_id == job.id:  # stopped between its start and now (see kill_horse)
                self._interrupt_id = None
                raise JobInterrupted(f"job {job.id} interrupted")
            job._result = job._execute()
            self._running = None
        finally:
            self._running = None
            _job_stack.pop()  # type: ignore[no-untyped-call]
        return job._result

    def _fail(self, job: Job, queue: Queue, exc_info: Any) -> None:
        """The except branch of Worker.perform_job, or for a stopped job Worker.monitor_work_horse's."""
        job._status = JobStatus.FAILED
        if self._stopped_job_id == job.id and isinstance(exc_info[1], JobInterrupted):
            job.ended_at = now()
            if job.stopped_callback:
                job.execute_stopped_callback(self.death_penalty_class)
            with contextlib.suppress(redis.RedisError):
                failures.record(self.connection, job.id, failures.NEVER, STOPPED_TEXT)
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

    def kill_horse(self, sig: signal.Signals = signal.SIGKILL) -> None:
        # No horse: RQ's stop-job and kill-horse handlers (and the shutdown budget) interrupt the job,
        # from another thread. A job started but not yet in its function is marked, and _execute
        # raises before calling it.
        current = self._current
        target = self._stopped_job_id or (current[0].id if current else None)  # RQ's stop-job sets the first
        if target is None:
            return
        self._interrupt_id = target
        if self._running == target:
            os.kill(os.getpid(), INTERRUPT_SIGNAL)

    @property
    def horse_pid(self) -> int:
        return os.getpid() if self._current else 0  # so RQ's kill-horse command reaches kill_horse

    def _interrupt(self, _signum: int, _frame: FrameType | None) -> None:
        if self._running is not None and self._running == self._interrupt_id:
            self._interrupt_id = None
            raise JobInterrupted(f"job {self._running} interrupted")

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        # RQ raises StopRequested when idle, which could land between a dequeue and its claim; here
        # the loop sees the flag within BLOCK_SECONDS. A job still running after the budget is interrupted.
        shutdown.requested.set()
        self._shutdown_requested_date = now()
        signal.signal(signal.SIGINT, self.request_force_stop)
        signal.signal(signal.SIGTERM, self.request_force_stop)
        self.log.info("Worker %s: warm shut down requested", self.name)
        self._stop_requested = True
        running = self._running
        if running is not None:
            self.monitor_deadline = (running, time.monotonic() + WARM_SHUTDOWN_BUDGET)


def build_fast_worker(conn: redis.Redis, names: Sequence[str] = FAST_QUEUES, name: str | None = None,
                      settings: Settings | None = None, pool: str = "") -> FastWorker:
    """A fast worker on `names` (never the refresh queue), its job context built once."""
    check_queues(names)
    if queue_names.REFRESH in names:
        raise ValidationError("the refresh queue needs the forking worker: run `refreshq worker` without --fast for it")
    queue_names.register_queues(conn)
    preload_job_modules()
    worker = FastWorker(
        queue_names.queues(conn, queue_names.dequeue_order(tuple(names))), connection=conn, name=name,
        serializer=JSONSerializer, job_monitoring_interval=JOB_MONITORING_INTERVAL,
        exception_handlers=abandoned.HANDLERS,  # as workers.build_worker
    )
    worker.job_context = context.JobContext(settings or context.process_settings())
    worker.pool_name = pool
    return worker
