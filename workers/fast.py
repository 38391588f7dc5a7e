"""The fast mode for short named tasks (`refreshq worker --fast`): no fork per job, several jobs claimed
at once, and RQ's bookkeeping of each job shipped in one round trip.

RQ's SimpleWorker does not fork but pays ~15 round trips per job (dequeue, fetch, prepare, start, the
success transaction, state, heartbeats). Here the writes are RQ's own: its methods (Execution.create,
Job.prepare_for_execution, Job's success handler, cleanup_execution, ...) write into a pipeline that is
only recorded (jobs.rqseam.simple), and jobs/scripts/step.lua runs the recorded commands of the job that
ended together with the start of the next claimed one, in one script, after checking the suspensions. So Job.fetch, the
registries, results, `rq info` and rq-dashboard see exactly what RQ's worker leaves. What is rare goes
through RQ's own code unchanged: failures, Retry results, repeats, results kept 0 s, stop-job commands
(RQ's handler; `kill_horse` interrupts the job instead of a horse), and dependents (enqueued with RQ's
Queue.enqueue_dependents when step.lua, atomically with the finish, counts any).

Unlike SimpleWorker, a long job still heartbeats (workers.monitor), so a worker killed mid-job is seen
within seconds, and its time limit holds even if the job swallows RQ's timeout exception. Refresh jobs
keep the forking worker: a fast worker refuses the refresh queue.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import threading
import time
from collections.abc import Sequence
from types import FrameType

import redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.worker import WorkerStatus

from jobs import context, failures, shutdown
from jobs import queues as queue_names
from jobs.config import Settings
from jobs.rqseam.recorded import Command, commands
from jobs.rqseam.simple import STOPPED_TEXT, NonForkingWorker
from workers.base import WARM_SHUTDOWN_BUDGET, Mode, WorkerBase, build
from workers.claims import BLOCK_SECONDS
from workers.monitor import INTERRUPT_SIGNAL, JobInterrupted, Monitor

BATCH = 20  # jobs claimed at once; the rest of a batch goes back to its queue once a job runs long
FAST_QUEUES = tuple(q for q in queue_names.ALL_QUEUES if q != queue_names.REFRESH)


class FastWorker(WorkerBase, NonForkingWorker):
    """A non-forking RQ worker that batches RQ's bookkeeping; see the module's docstring."""

    _running: str | None = None  # id of the job whose function is executing (the interrupt's guard)
    _interrupt_id: str | None = None
    _current: tuple[Job, Queue, float] | None = None  # (job, queue, started: monotonic)
    monitor_deadline: tuple[str, float] | None = None  # (job id, monotonic): interrupt it then (SIGTERM)
    _ended_execution: tuple[str, str] = ("", "")  # (started registry, member) of the job whose end is sent next

    def run(self, burst: bool, logging_level: str | None) -> bool:
        """RQ's work loop, a batch of claimed jobs at a time (RQ's dequeue options do not apply)."""
        self.bootstrap(logging_level)
        self.install_rq_signal_handlers()
        self.install_drain_handler()
        if shutdown.requested.is_set():  # a stop while it started, seen by the start-up handler only
            self.stop_requested = True
        signal.signal(INTERRUPT_SIGNAL, self._interrupt)
        previous = context.install(self.job_context)  # for the jobs of this process, while it works
        self._names = [q.name for q in self.queues]
        self._pending: collections.deque[tuple[Job, Queue]] = collections.deque()
        self.monitor_lock = threading.Lock()
        monitor = Monitor(self)
        monitor.start()
        done = 0
        try:
            while not self.stop_requested:
                if self.should_run_maintenance_tasks:
                    self.run_maintenance_tasks()  # type: ignore[no-untyped-call]
                got = self.claimer.claim(self.ordered_queues, BATCH, None if burst else BLOCK_SECONDS)
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
        ended: list[Command] = []
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
            rec, dependents, ok = self.perform_recorded(job, queue)
            ended = commands(rec)
            self._ended_execution = (queue.started_job_registry.key, execution.composite_key if execution else "")
            count += 1
        if queue is not None:
            self.reorder_queues(queue)
        self._give_back()
        return count

    def _step(self, ended: list[Command], dependents: str, job: Job | None, queue: Queue | None,
              ok: bool) -> tuple[Job, Queue] | None:
        """The ended job's bookkeeping and the next claimed job's start, in one round trip."""
        with self.monitor_lock:
            nxt = self._pending.popleft() if self._pending and not self.stop_requested else None
            start = commands(self.record_start(nxt[0])) if nxt else []
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

    def entering_function(self, job: Job) -> None:
        # Interruptible from now on (kill_horse); one stopped between its start and now raises here.
        self._running = job.id
        if self._interrupt_id == job.id:
            self._interrupt_id = None
            raise JobInterrupted(f"job {job.id} interrupted")

    def left_function(self, job: Job) -> None:
        self._running = None

    def stopped_by_user(self, job: Job, exc: BaseException | None) -> bool:
        return self.stopped_job_id == job.id and isinstance(exc, JobInterrupted)

    def job_stopped(self, job: Job) -> None:
        with contextlib.suppress(redis.RedisError):
            failures.record(self.connection, job.id, failures.NEVER, STOPPED_TEXT)

    def interrupt_job(self) -> None:
        # No horse: RQ's stop-job and kill-horse handlers (and the shutdown budget) interrupt the job,
        # from another thread. A job started but not yet in its function is marked, and entering_function
        # raises before calling it.
        current = self._current
        target = self.stopped_job_id or (current[0].id if current else None)  # RQ's stop-job sets the first
        if target is None:
            return
        self._interrupt_id = target
        if self._running == target:
            os.kill(os.getpid(), INTERRUPT_SIGNAL)

    def job_in_hand(self) -> bool:
        return self._current is not None

    def _interrupt(self, _signum: int, _frame: FrameType | None) -> None:
        if self._running is not None and self._running == self._interrupt_id:
            self._interrupt_id = None
            raise JobInterrupted(f"job {self._running} interrupted")

    def on_stop_signal(self) -> bool:
        # RQ raises StopRequested when idle, which could land between a dequeue and its claim; here
        # the loop sees the flag within BLOCK_SECONDS. A job still running after the budget is interrupted.
        shutdown.requested.set()
        self.begin_warm_stop()
        running = self._running
        if running is not None:
            self.monitor_deadline = (running, time.monotonic() + WARM_SHUTDOWN_BUDGET)
        return False


FAST = Mode(FastWorker, refused=(queue_names.REFRESH,),
            refusal="the refresh queue needs the forking worker: run `refreshq worker` without --fast for it")


def build_fast_worker(conn: redis.Redis, names: Sequence[str] = FAST_QUEUES, name: str | None = None,
                      settings: Settings | None = None, pool: str = "") -> FastWorker:
    """A fast worker on `names` (never the refresh queue), built by workers.base.build."""
    return build(FAST, conn, names, name, settings, pool)
