"""The scheduler process: one active instance (owner-checked lock), the others wait as hot standbys.

Each tick the active instance runs its duties (jobs/duties/, one module each): it cleans RQ's started-job
registries so a job whose worker died is noticed within seconds, retries failed jobs with backoff (or
buries them in the dead-letter registry), enforces refresh tasks' time limits, admits refresh tasks
waiting for a running slot, fires the named tasks' schedules and requeues their due RQ retries, and takes up
work whose job is gone (jobs.duties.reconcile). A refresh job resumed after its worker died goes ahead of the
jobs that took its place meanwhile (jobs.duties.make_room).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType

import redis

from jobs import keys, queues, shutdown
from jobs.config import Settings
from jobs.context import process_settings
from jobs.duties import abandoned, alerts, fire_schedules, named_retries, orphaned_claims, retries, time_limits
from jobs.duties.make_room import MakeRoom
from jobs.duties.reconcile import Reconciler
from jobs.lock import OwnedLock
from jobs.refresh.admit import admit_waiting

log = logging.getLogger("refreshq.scheduler")

TICK_SECONDS = 1.0
LOCK_TTL_MS = 10_000

Duty = Callable[[redis.Redis], None]


def default_duties(settings: Settings | None = None) -> list[Duty]:
    """The duties of every tick, in order, with the settings of the process (read once, when it starts)."""
    settings = settings or process_settings()
    policy = retries.policy_of(settings)

    def sweep_failed_jobs(conn: redis.Redis) -> None:
        retries.sweep_failed_jobs(conn, policy, settings)

    def enforce_time_limits(conn: redis.Redis) -> None:
        time_limits.enforce_time_limits(conn, settings)

    def admit_waiting_refreshes(conn: redis.Redis) -> None:
        # A refresh that ends admits the next one itself (jobs.refresh.finish); this catches what that cannot:
        # a slot freed by a refresh whose jobs died, a limit raised, a nudge that was lost.
        admit_waiting(conn, settings)

    def fire_due_schedules(conn: redis.Redis) -> None:
        fire_schedules.run_schedules(conn, settings=settings)

    def requeue_due_retries(conn: redis.Redis) -> None:
        named_retries.enqueue_due_retries(conn)

    def requeue_orphaned_claims(conn: redis.Redis) -> None:
        orphaned_claims.requeue_orphaned_claims(conn)

    return [abandoned.clean_started_registries, requeue_orphaned_claims, sweep_failed_jobs, MakeRoom(),
            enforce_time_limits, admit_waiting_refreshes, fire_due_schedules, requeue_due_retries, Reconciler(settings),
            alerts.AlertDuty(settings)]


class Scheduler:
    """The scheduler loop; `run()` returns after SIGTERM/SIGINT or `stop()`."""

    def __init__(self, conn: redis.Redis, duties: list[Duty] | None = None, tick: float = TICK_SECONDS) -> None:
        self.conn = conn
        self.lock = OwnedLock(conn, keys.SCHEDULER_LOCK, LOCK_TTL_MS)
        self.duties = duties if duties is not None else default_duties()
        self.tick = tick
        self.active = False
        self._announced: bool | None = None
        self._stop = threading.Event()

    def stop(self, *_: object) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        def handler(signum: int, _frame: FrameType | None) -> None:
            log.info("scheduler: received signal %s, stopping", signal.Signals(signum).name)
            shutdown.requested.set()  # the connection stops waiting for a lost server
            self.stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def run(self) -> None:
        try:
            queues.register_queues(self.conn)
        except redis.RedisError as exc:  # a patient client waits; only a stop cuts the wait short
            log.warning("scheduler: could not register the queues (%s)", exc)
        log.info("scheduler: started (lock %s)", keys.SCHEDULER_LOCK)
        try:
            while not self._stop.is_set():
                try:
                    self.run_once()
                except redis.RedisError as exc:
                    log.warning("scheduler: Redis unavailable (%s)", exc)
                self._pause()
        finally:
            for duty in self.duties:  # a duty with a thread of its own (alert delivery) stops it
                close = getattr(duty, "close", None)
                if close is not None:
                    close()
            if self.active:
                try:
                    self.lock.release()
                except redis.RedisError as exc:  # the lock expires by itself within LOCK_TTL_MS
                    log.warning("scheduler: could not release the lock (%s)", exc)
            log.info("scheduler: stopped")

    def _pause(self) -> None:
        """Wait one tick, cut short by stop(). Polled rather than Event.wait: the signal handler sets
        the event, and a handler run while this thread holds the event's lock would deadlock."""
        deadline = time.monotonic() + self.tick
        while not self._stop.is_set() and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.1))

    def run_once(self) -> None:
        try:
            self.active = self.lock.acquire()
        except redis.RedisError as exc:
            log.warning("scheduler: Redis unavailable (%s); retrying", exc)
            return
        if self.active != self._announced:
            self._announced = self.active
            log.info("scheduler: %s", "active" if self.active else "standing by (another scheduler is active)")
        if not self.active:
            return
        self.conn.set(keys.SCHEDULER_HEARTBEAT, datetime.now(UTC).isoformat(), ex=60)
        for duty in self.duties:
            if self._stop.is_set():
                return  # a stop waits for the duty in progress, not for the rest of the tick
            started = time.monotonic()
            try:
                duty(self.conn)
            except redis.RedisError as exc:
                log.warning("scheduler: %s failed: %s", duty.__name__, exc)
            log.debug("scheduler: %s took %.3f s", duty.__name__, time.monotonic() - started)
