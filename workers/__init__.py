"""The refreshq worker: an RQ worker on refreshq's queues, JSON-serialized, with short heartbeats."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Sequence
from types import FrameType

import redis
from redis.client import PubSub, PubSubWorkerThread
from rq import Queue, Worker
from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.exceptions import StopRequested
from rq.job import Job
from rq.serializers import JSONSerializer

from jobs import queues as queue_names
from jobs import shutdown
from jobs.errors import ValidationError

# Seconds between the worker's heartbeats while a job runs.
JOB_MONITORING_INTERVAL = 5
# How long after its last heartbeat a running job counts as abandoned. RQ's default grace is 60 s;
# refreshq's scheduler cleans the started registries every few seconds, so a dead worker's job is
# resumed elsewhere within about 20 s instead of several minutes.
HEARTBEAT_GRACE = 10
# Seconds from a stop request a work-horse has to end when its worker stops with Redis gone (within
# a deploy's usual 10 s budget, leaving time to exit).
HORSE_STOP_GRACE = 6.0


class RefreshqWorker(Worker):
    """A forking RQ worker whose jobs are declared abandoned soon after their worker dies, and whose
    warm shutdown (SIGTERM) asks the running job to checkpoint and requeue instead of waiting for it.

    A stop is honoured with the server gone too: the stop raises `shutdown.requested`, on which the
    connection (jobs/reconnect.py) stops waiting for Redis; the Redis writes of a stop (the shutdown
    date, unregistering) are skipped with a log line when they fail, and a work-horse that cannot
    report its job is given HORSE_STOP_GRACE seconds from the stop request, then killed.
    """

    _booting = False
    _stop_asked_at: float | None = None

    def get_heartbeat_ttl(self, job: Job) -> int:
        return int(self.job_monitoring_interval) + HEARTBEAT_GRACE

    def setup_work_horse_signals(self) -> None:
        shutdown.install_horse_handlers()

    def bootstrap(
        self,
        logging_level: str | None = "INFO",
        date_format: str = DEFAULT_LOGGING_DATE_FORMAT,
        log_format: str = DEFAULT_LOGGING_FORMAT,
    ) -> None:
        # RQ installs its handlers only after registering the worker: a SIGTERM in between killed a
        # worker that stayed listed in Redis. Installed first, a stop while booting is a clean one.
        self._booting = True
        self._install_signal_handlers()  # type: ignore[no-untyped-call]
        if shutdown.requested.is_set():
            self._stop_requested = True
        try:
            super().bootstrap(logging_level, date_format, log_format)
        finally:
            self._booting = False

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        shutdown.requested.set()
        if self._stop_asked_at is None:
            self._stop_asked_at = time.monotonic()
        if self._booting:
            # RQ raises StopRequested when idle, which here would cut the registration half-way;
            # work() sees the flag before its first dequeue and unregisters.
            self._stop_requested = True
            return
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]

    def handle_warm_shutdown_request(self) -> None:
        super().handle_warm_shutdown_request()  # type: ignore[no-untyped-call]
        if self.horse_pid:
            self.log.info("Worker %s: asking job in work-horse %s to checkpoint and requeue", self.name, self.horse_pid)
            self.kill_horse(sig=signal.SIGTERM)

    def set_shutdown_requested_date(self) -> None:
        try:
            super().set_shutdown_requested_date()  # type: ignore[no-untyped-call]
        except redis.RedisError as exc:
            self.log.warning("Worker %s: could not record the shutdown request (%s)", self.name, exc)

    def execute_job(self, job: Job, queue: Queue) -> None:
        try:
            super().execute_job(job, queue)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if not shutdown.requested.is_set():
                raise
            self.log.warning(
                "Worker %s: stopping without Redis (%s); job %s is left to crash recovery", self.name, exc, job.id
            )
            self._end_horse()
            raise StopRequested from None

    def _end_horse(self) -> None:
        """Give a work-horse still running a few seconds to stop, then kill it: with Redis gone its job
        cannot report anyway, and a worker must not exit leaving its horse behind."""
        deadline = (self._stop_asked_at or time.monotonic()) + HORSE_STOP_GRACE
        while self.horse_pid and time.monotonic() < deadline:
            try:
                if os.waitpid(self.horse_pid, os.WNOHANG)[0]:
                    self._horse_pid = 0
            except ChildProcessError:
                self._horse_pid = 0
            time.sleep(0.05)
        if self.horse_pid:
            self.log.warning("Worker %s: work-horse %s did not stop in time; killing it", self.name, self.horse_pid)
            self.kill_horse()
            self.wait_for_horse()
            self._horse_pid = 0

    def _pubsub_exception_handler(self, exc: Exception, pubsub: PubSub, pubsub_thread: PubSubWorkerThread) -> None:
        # RQ's handler logs and retries every 2 s, forever; a stopping worker needs no more commands.
        if shutdown.requested.is_set() and isinstance(exc, redis.ConnectionError):
            pubsub_thread.stop()
            return
        super()._pubsub_exception_handler(exc, pubsub, pubsub_thread)

    def teardown(self) -> None:
        try:
            super().teardown()  # type: ignore[no-untyped-call]
        except redis.RedisError as exc:
            # Its worker key expires by itself (RQ's worker TTL); the server is not coming back in time.
            self.log.warning("Worker %s: could not unregister (%s)", self.name, exc)


def preload_job_modules() -> None:
    """Import what jobs run before forking: each work-horse then starts warm instead of importing
    httpx, the clients and the region tree again (about 0.2 s of CPU per job)."""
    import httpcore  # noqa: F401 - httpx imports it only when the first client is built

    import jobs.refresh
    import jobs.runs
    import jobs.upstream.http
    import jobs.upstream.llm
    import jobs.upstream.sample

    jobs.upstream.sample.load_tree()
    jobs.upstream.http.shared_tls_context()


def build_worker(
    conn: redis.Redis, names: Sequence[str] = queue_names.ALL_QUEUES, name: str | None = None
) -> RefreshqWorker:
    unknown = [n for n in names if n not in queue_names.ALL_QUEUES]
    if unknown:
        raise ValidationError(
            f"unknown queue {', '.join(unknown)}: expected one of {', '.join(queue_names.ALL_QUEUES)}"
        )
    queue_names.register_queues(conn)
    preload_job_modules()
    return RefreshqWorker(
        queue_names.queues(conn, tuple(names)),
        connection=conn,
        name=name,
        serializer=JSONSerializer,
        job_monitoring_interval=JOB_MONITORING_INTERVAL,
    )
