"""The watch over a fast worker's running job, from a thread of its own (workers.fast).

RQ's forking worker heartbeats from its main process while the horse runs, and kills a horse that
overruns its time limit; SimpleWorker does neither, so a SimpleWorker killed mid-job is noticed only
when the job's time limit (plus a minute) has passed. This thread gives the fast worker both: every
JOB_MONITORING_INTERVAL it renews the heartbeats (RQ's maintain_heartbeats, through jobs.rqseam.simple), and a
job still running HARD_LIMIT_GRACE after its time limit (it swallowed RQ's JobTimeoutException, or is stuck in C code)
is failed as timed out, and the worker exits so that its pool starts a clean one. It also gives the
rest of a batch back to its queues once a job has run RELEASE_AFTER, so short jobs never wait behind a
long one, and interrupts a job still running WARM_SHUTDOWN_BUDGET after a SIGTERM.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from typing import Any, Protocol

import redis
from rq.job import Job
from rq.queue import Queue

from jobs import failures

log = logging.getLogger("refreshq.worker")

INTERRUPT_SIGNAL = signal.SIGUSR2
TICK = 0.05
RELEASE_AFTER = 0.1
HARD_LIMIT_GRACE = 10.0


class JobInterrupted(BaseException):
    """Raised inside a fast worker's job to stop it (RQ's stop-job command, the shutdown budget).

    A BaseException, outside the RefreshqError tree on purpose: it is not an error of the job, and a
    job's own `except Exception` must not swallow it (RQ's forking worker kills the horse instead)."""


class Watched(Protocol):
    """What the monitor uses of a fast worker (workers.fast.FastWorker)."""

    name: str
    connection: redis.Redis
    monitor_lock: threading.Lock
    monitor_deadline: tuple[str, float] | None
    _current: tuple[Job, Queue, float] | None

    @property
    def job_monitoring_interval(self) -> float: ...
    def _give_back(self, always: bool = False) -> None: ...
    def kill_horse(self, sig: signal.Signals = signal.SIGKILL) -> None: ...
    def keep_alive(self, job: Job, elapsed: float) -> None: ...
    def handle_job_failure(self, job: Job, queue: Queue, started_job_registry: Any = None,
                           exc_string: str = "") -> Any: ...
    def teardown(self) -> Any: ...


class Monitor(threading.Thread):
    def __init__(self, worker: Watched) -> None:
        super().__init__(name=f"monitor-{worker.name}", daemon=True)
        self.worker = worker
        self.lock: threading.Lock = worker.monitor_lock
        self._stopped = threading.Event()
        self._beat: tuple[Job | None, float] = (None, 0.0)

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=5)

    def run(self) -> None:
        while not self._stopped.wait(TICK):
            try:
                self.tick()
            except redis.RedisError as exc:  # the next tick tries again; the main loop sees outages too
                log.warning("Worker %s: heartbeat failed (%s)", self.worker.name, exc)

    def tick(self) -> None:
        worker = self.worker
        current = worker._current
        if current is None:
            return
        job, queue, started = current
        elapsed = time.monotonic() - started
        if elapsed < RELEASE_AFTER:
            return
        with self.lock:
            if worker._current is not current:
                return  # ended meanwhile
            worker._give_back()
            if self._beat[0] is not job:
                self._beat = (job, started)
            if time.monotonic() - self._beat[1] >= worker.job_monitoring_interval:
                worker.keep_alive(job, elapsed)
                self._beat = (job, time.monotonic())
        self._enforce(job, queue, elapsed)

    def _enforce(self, job: Job, queue: Queue, elapsed: float) -> None:
        worker = self.worker
        deadline = worker.monitor_deadline
        if deadline is not None and deadline[0] == job.id and time.monotonic() >= deadline[1]:
            worker.monitor_deadline = None
            log.warning("Worker %s: job %s did not stop within the shutdown budget; interrupting it",
                        worker.name, job.id)
            worker.kill_horse()
        limit = job.timeout
        if limit is not None and limit > 0 and elapsed > limit + HARD_LIMIT_GRACE:
            self._hard_limit(job, queue, limit)

    def _hard_limit(self, job: Job, queue: Queue, limit: Any) -> None:
        worker = self.worker
        text = (f"rq.timeouts.JobTimeoutException: Task exceeded maximum timeout value ({limit} seconds) "
                "and did not stop; its worker exited")
        log.error("Worker %s: job %s %s", worker.name, job.id, text)
        with self.lock, contextlib.suppress(redis.RedisError):
            failures.record(worker.connection, job.id, failures.PERMANENT, text, "rq.timeouts.JobTimeoutException")
            worker.handle_job_failure(job, queue, exc_string=text)
            worker.teardown()
        os._exit(1)
