"""The refreshq worker: an RQ worker on refreshq's queues, JSON-serialized, with short heartbeats.

Built once per process from the settings it was started with (`build_worker`): its jobs get them from
the job context (jobs.context), and how each failed job is to be retried is recorded where it failed
(jobs.failures).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from types import FrameType
from typing import Any

import redis
from rq import Queue, Worker
from rq.command import parse_payload
from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.exceptions import StopRequested
from rq.job import Job, Retry
from rq.serializers import JSONSerializer
from rq.worker import WorkerStatus

from jobs import context, failures, keys, limits, shutdown
from jobs import queues as queue_names
from jobs.config import Settings
from jobs.duties import abandoned, make_room
from jobs.errors import ValidationError
from jobs.reconnect import REFUSALS
from jobs.refresh.job import REFRESH_FUNCS
from jobs.scripts import Scripts
from jobs.upstream import identity
from workers.channel import ChannelMixin
from workers.claims import BLOCK_SECONDS, Claimer
from workers.drain import DrainMixin
from workers.takeover import TakeoverMixin

# Seconds between the worker's heartbeats while a job runs.
JOB_MONITORING_INTERVAL = 5
# How long after its last heartbeat a running job counts as abandoned. RQ's default grace is 60 s;
# refreshq's scheduler cleans the started registries every few seconds, so a dead worker's job is
# resumed elsewhere within about 20 s instead of several minutes.
HEARTBEAT_GRACE = 10
# Seconds from a stop request a work-horse has to end when its worker stops with Redis gone (within
# a deploy's usual 10 s budget, leaving time to exit).
HORSE_STOP_GRACE = 6.0
# After a SIGTERM, how long the running job has to stop by itself before its work-horse is killed:
# platforms allow about 10-30 s between SIGTERM and SIGKILL, and the worker must be gone before.
WARM_SHUTDOWN_BUDGET = 8.0
# Jobs that hold upstream slots (given back when their work-horse exits, however it does), and jobs
# whose work is checkpointed, so that one cut short by the shutdown budget is requeued, not failed.
GATED_FUNCS = REFRESH_FUNCS
CHECKPOINTED_FUNCS = GATED_FUNCS


class RefreshqWorker(ChannelMixin, DrainMixin, TakeoverMixin, Worker):
    """A forking RQ worker whose jobs are declared abandoned soon after their worker dies, and whose
    warm shutdown (SIGTERM) asks the running job to checkpoint and requeue instead of waiting for it.

    Its command channel is listened to on a thread that never holds a stop (workers.channel).
    A stop is honoured with the server gone too: the stop raises `shutdown.requested`, on which the
    connection (jobs/reconnect.py) stops waiting for Redis; the Redis writes of a stop (the shutdown
    date, unregistering) are skipped with a log line when they fail, and a work-horse that cannot
    report its job is given HORSE_STOP_GRACE seconds from the stop request, then killed.
    """

    job_context: context.JobContext | None = None  # set by build_worker, before any work-horse forks
    _booting = False
    _stop_asked_at: float | None = None
    _monitored: tuple[str, int] | None = None  # (job id, horse pid) of the job being monitored
    _cut_short: str | None = None  # id of the job whose horse the shutdown budget killed
    _asked_horse = 0  # pid of the work-horse a warm shutdown was forwarded to
    pool_name = ""  # the pool this worker belongs to (workers.pool), if any
    _claimer: Claimer | None = None
    _advertised_at = -math.inf  # monotonic time of the last advertisement of the worker's upstream

    @property
    def claimer(self) -> Claimer:
        if self._claimer is None:
            self._claimer = Claimer(self.connection, self.name, self.pool_name, self.serializer)
        return self._claimer

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        # RQ's loop around Queue.dequeue_any, through claims (workers.claims): a suspended queue gives
        # this worker no job, and a drain or a resume is seen within BLOCK_SECONDS, not RQ's 405 s.
        self.set_state(WorkerStatus.IDLE)
        self.procline("Listening on " + ",".join(self.queue_names()))  # type: ignore[no-untyped-call]
        while not self._stop_requested:
            self.heartbeat()
            if self.should_run_maintenance_tasks:
                self.run_maintenance_tasks()  # type: ignore[no-untyped-call]
            got = self.claimer.claim(self._ordered_queues, 1, None if timeout is None else BLOCK_SECONDS)
            if got.jobs:
                job, queue = got.jobs[0]
                self.reorder_queues(reference_queue=queue)
                job.redis_server_version = self.get_redis_server_version()  # type: ignore[no-untyped-call]
                self.log.info("Worker %s: %s: %s", self.name, queue.name, job.id)
                self.heartbeat()
                return job, queue
            if timeout is None:
                return None  # burst: the queues are empty, or suspended (RQ's burst worker exits then too)
            self.set_state(WorkerStatus.SUSPENDED if got.held else WorkerStatus.IDLE)
        return None

    def clean_registries(self) -> None:
        # RQ's maintenance judges heartbeats too: not while writes are refused, nor soon after (jobs/reconnect.py).
        if not REFUSALS.within():
            super().clean_registries()  # type: ignore[no-untyped-call]

    def prepare_execution(self, job: Job) -> Any:
        execution = super().prepare_execution(job)
        self.claimer.forget(job.origin, job.id)  # in the started registry now: no longer a claim
        return execution

    def get_heartbeat_ttl(self, job: Job) -> int:
        return int(self.job_monitoring_interval) + HEARTBEAT_GRACE

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        super().heartbeat(timeout, pipeline)
        # A worker on the refresh queue says which upstream it fetches from (jobs.upstream.identity), so
        # that a refresh for another one is refused when it is created.
        due = time.monotonic() - self._advertised_at >= identity.ADVERTISE_EVERY
        if due and self.job_context is not None and queue_names.REFRESH in self.queue_names():
            identity.advertise(pipeline if pipeline is not None else self.connection, self.job_context.settings)
            self._advertised_at = time.monotonic()

    def setup_work_horse_signals(self) -> None:
        # A stop the worker was asked for as it forked this horse (between its dequeue and the fork) is the
        # horse's too: the job checkpoints and requeues at its first safe point instead of running to its end.
        stopping = shutdown.requested.is_set()
        shutdown.install_horse_handlers()
        if stopping:
            shutdown.requested.set()

    def perform_job(self, job: Job, queue: Queue) -> bool:
        # In the work-horse: the job runs with the worker's context (its settings), not the environment's,
        # and knows its execution: the token its writes are fenced with (jobs.refresh.fence).
        running = self.job_context
        if running is not None and self.execution is not None:
            running = replace(running, execution=self.execution.composite_key,
                              started_registry=queue.started_job_registry.key)
        previous = context.install(running)
        try:
            return bool(super().perform_job(job, queue))
        finally:
            context.install(previous)

    def reorder_queues(self, reference_queue: Queue) -> None:
        # RQ's hook after every dequeue, where its own strategies reorder `_ordered_queues`.
        by_name = {q.name: q for q in self.queues}
        current = tuple(q.name for q in self._ordered_queues)
        order = queue_names.dequeue_order(tuple(by_name), reference_queue.name, current)
        self._ordered_queues = [by_name[name] for name in order]

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
        self.install_drain_handler()
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
        # Raised first: RQ raises StopRequested from this handler when idle, and code that catches broadly
        # where the signal lands would swallow it; the loop then still stops within BLOCK_SECONDS.
        self._stop_requested = True
        if self._booting:
            # RQ raises StopRequested when idle, which here would cut the registration half-way;
            # work() sees the flag before its first dequeue and unregisters.
            return
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]

    def handle_warm_shutdown_request(self) -> None:
        super().handle_warm_shutdown_request()  # type: ignore[no-untyped-call]
        self._ask_horse_to_stop()

    def _ask_horse_to_stop(self) -> None:
        """Forward a warm shutdown to the work-horse (once per horse) and give it WARM_SHUTDOWN_BUDGET s."""
        pid = self.horse_pid
        if not pid or self._asked_horse == pid:
            return
        self._asked_horse = pid
        self.log.info("Worker %s: asking job in work-horse %s to checkpoint and requeue", self.name, pid)
        self.kill_horse(sig=signal.SIGTERM)
        timer = threading.Timer(WARM_SHUTDOWN_BUDGET, self._cut_short_horse, args=(pid,))
        timer.daemon = True
        timer.start()

    def _cut_short_horse(self, pid: int) -> None:
        monitored = self._monitored
        if monitored is None or monitored[1] != pid or self.horse_pid != pid:
            return  # that job ended in time
        self._cut_short = monitored[0]
        self.log.warning("Worker %s: job %s did not stop within %.0f s of the shutdown; killing its work-horse",
                         self.name, monitored[0], WARM_SHUTDOWN_BUDGET)
        self.kill_horse(sig=signal.SIGKILL)

    def monitor_work_horse(self, job: Job, queue: Queue) -> None:
        pid = self.horse_pid
        self._monitored, self._cut_short = (job.id, pid), None
        if self._stop_asked_at is not None:
            # The SIGTERM came between the dequeue and the fork, when there was no horse to forward it to: the
            # job still gets the stop and the budget, or a deploy would wait for a whole province.
            self._ask_horse_to_stop()
        try:
            super().monitor_work_horse(job, queue)
        finally:
            self._monitored = None
            if job.func_name in GATED_FUNCS:
                # The horse gives its slots back on every way out of the job; one that died (SIGKILL,
                # OOM, the budget) could not, and waiting for the lease to lapse would stall every
                # worker on every machine for LEASE_SECONDS.
                with contextlib.suppress(redis.RedisError):
                    limits.release_holder(self.connection, limits.holder_id(job.id, self.name, pid))

    def handle_job_failure(
        self, job: Job, queue: Queue, started_job_registry: Any = None, exc_string: str = ""
    ) -> None:
        if self.taken_over(job):
            return
        if job.id == self._cut_short and job.func_name in CHECKPOINTED_FUNCS:
            self._cut_short = None
            self.log.info("Worker %s: requeueing %s at the front of %s (resumes from its checkpoint)",
                          self.name, job.id, queue.name)
            with self.connection.pipeline() as pipe:
                pipe.multi()  # one transaction: out of the started registry and back into the queue
                self.cleanup_execution(job, pipeline=pipe)
                queue.enqueue_job(job, pipeline=pipe, at_front=True)
                pipe.execute()
            return
        if not self.is_horse:
            self._record_lost_horse(job, exc_string)
        super().handle_job_failure(job, queue, started_job_registry, exc_string)

    def _record_lost_horse(self, job: Job, exc_string: str) -> None:
        """The work-horse died (OOM, a kill, the shutdown budget) or was stopped on purpose: nothing in it
        could say why, so the worker records it -- a stopped job is never retried, a dead horse's is not
        retried by the sweeper either (a job that kills its horse would kill the next one too)."""
        kind = failures.NEVER if self._stopped_job_id == job.id else failures.PERMANENT
        with contextlib.suppress(redis.RedisError):
            failures.record(self.connection, job.id, kind, exc_string.strip() or "work-horse died")

    def handle_job_retry(self, job: Job, queue: Queue, retry: Retry, started_job_registry: Any, execution: Any) -> None:
        if self.taken_over(job):
            return
        super().handle_job_retry(job, queue, retry, started_job_registry, execution)
        # RQ 2.12 enqueues a job that returned a Retry at the back, whatever its `enqueue_at_front`
        # (Job._handle_retry_result); move it to the front (or behind the job it stepped back for: in the
        # work-horse, which runs this), unless another worker took it already.
        if retry.enqueue_at_front and not any(retry.intervals):
            behind = self.connection.getdel(keys.step_back(job.id)) or b""
            Scripts(self.connection).move_to_front(keys=[queue.key], args=[job.id, behind])

    def handle_payload(self, message: Any) -> None:
        # RQ's command channel, plus refreshq's step back (jobs.duties.make_room).
        payload = parse_payload(message)
        if payload.get("command") != make_room.STEP_BACK:
            super().handle_payload(message)
            return
        monitored, job_id = self._monitored, str(payload.get("job_id"))
        if monitored is None or monitored[0] != job_id or self.horse_pid != monitored[1]:
            return  # that job ended meanwhile
        self.log.info("Worker %s: %s steps back for a job resumed after its worker died (checkpoint kept)",
                      self.name, job_id)
        self.kill_horse(sig=signal.SIGTERM)  # the job stops at its next safe point and requeues itself

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

    def teardown(self) -> None:
        try:
            super().teardown()  # type: ignore[no-untyped-call]
        except redis.RedisError as exc:
            # Its worker key expires by itself (RQ's worker TTL); the server is not coming back in time.
            self.log.warning("Worker %s: could not unregister (%s)", self.name, exc)


def preload_job_modules() -> None:
    """Import what jobs run before forking: each work-horse then starts warm instead of importing
    httpx, the clients and the region tree again (about 0.2 s of CPU per job), or looking libc up."""
    import httpcore  # noqa: F401 - httpx imports it only when the first client is built

    import jobs.named.runs
    import jobs.refresh.plan
    import jobs.refresh.province
    import jobs.upstream.client
    import jobs.upstream.http
    import jobs.upstream.llm
    import jobs.upstream.sample

    jobs.upstream.sample.load_tree()
    jobs.upstream.client.shared_tls_context()
    shutdown.libc_prctl()


def build_worker(
    conn: redis.Redis, names: Sequence[str] = queue_names.ALL_QUEUES, name: str | None = None,
    settings: Settings | None = None, pool: str = "",
) -> RefreshqWorker:
    """A worker on `names`, its job modules preloaded and its job context built (from `settings`, or
    this process's): once, before it forks any work-horse."""
    unknown = [n for n in names if n not in queue_names.ALL_QUEUES]
    if unknown:
        raise ValidationError(
            f"unknown queue {', '.join(unknown)}: expected one of {', '.join(queue_names.ALL_QUEUES)}"
        )
    queue_names.register_queues(conn)
    preload_job_modules()
    worker = RefreshqWorker(
        queue_names.queues(conn, queue_names.dequeue_order(tuple(names))),
        connection=conn,
        name=name,
        serializer=JSONSerializer,
        job_monitoring_interval=JOB_MONITORING_INTERVAL,
        exception_handlers=abandoned.HANDLERS,  # also RQ's own cleanup of the started registries
    )
    worker.job_context = context.JobContext(settings or context.process_settings())
    worker.pool_name = pool
    return worker
