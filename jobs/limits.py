"""Limits shared by every worker on every machine: the upstream gate, and the running-task limit.

httpx limits one process's connections; only Redis sees every machine's, so the limits live there.

- In flight (REFRESHQ_UPSTREAM_CONCURRENCY): a job execution (the *holder*) leases a block of slots
  and its threads take them from a local semaphore, so a request costs no Redis round trip. A
  heartbeat thread renews the lease every RENEW_SECONDS; a holder that stops renewing (its
  work-horse died with its worker) lapses LEASE_SECONDS after the last renewal, and a worker gives
  the slots of a work-horse that died under it back at once (workers.RefreshqWorker). Holders
  share the limit max-min fairly: while another waits, nobody keeps more than an even share, and a
  holder above it shrinks as its requests end.
- Per second (REFRESHQ_UPSTREAM_RPS: a cap, or unset/`auto`: learned) and Retry-After for every worker:
  jobs.pacing, one round trip per batch of send times. A request takes its slot first, then its send time.
- With REFRESHQ_UPSTREAM_CONCURRENCY=0 (no global in-flight limit) and REFRESHQ_UPSTREAM_RPS=0 there is no
  gate and no Redis at all; a gate that never sees a request (the built-in sample upstream, a resumed job
  with nothing left to fetch) never talks to Redis either.

The running-task limit (REFRESHQ_MAX_CONCURRENT_TASKS) is start.lua (jobs/scripts): every way of a refresh task
into RUNNING goes through `start_refresh`, first come first served.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import redis

from jobs import keys
from jobs.config import Settings
from jobs.errors import UpstreamGateClosed
from jobs.pacing import Admission, PacePolicy, Pacer
from jobs.redis_values import as_text
from jobs.scripts import Scripts
from jobs.statuses import PENDING, RUNNING

log = logging.getLogger("refreshq.limits")

# A holder that stops renewing lapses this long after its last renewal: the crash-detection window.
LEASE_SECONDS = 10.0
# Renewals while the holder has what it asks for, and while it waits for more or holds more than half
# of the limit (so that a job arriving on another worker gets its share within about that long).
RENEW_SECONDS = 2.0
POLL_SECONDS = 0.5
# Renewals never come closer together than this, however often the threads wake the heartbeat.
MIN_GAP_SECONDS = 0.05
# The local side stops using its slots this long before Redis could count its lease as lapsed.
SAFETY_SECONDS = 1.0

_KEYS = [keys.UPSTREAM_HOLDERS, keys.UPSTREAM_SLOTS, keys.UPSTREAM_WANTS]


def start_refresh(conn: redis.Redis, task_id: str, record: dict[str, str], max_tasks: int, step: str) -> str:
    """Admit a PENDING task into RUNNING within the running-task limit (every way into RUNNING goes
    through here): "OK", "WAIT" (queued in order for a slot) or the status that stops it."""
    now = datetime.now(UTC)
    fields = {"current_step": step, "attempt_started_at": now.isoformat(timespec="seconds")}
    if not record.get("started_at"):
        fields["started_at"] = fields["attempt_started_at"]
    owner = record.get("owner") or ""  # never changes: its indexes are passed
    args: list[Any] = [max_tasks, fields["attempt_started_at"], now.timestamp(), owner]
    for name, value in fields.items():
        args += [name, value]
    outcome = as_text(Scripts(conn).start(keys=start_keys(task_id, owner), args=args))
    if outcome == "WAIT":
        position = conn.zrank(keys.TASKS_WAITING, task_id)
        place = position + 1 if isinstance(position, int) else 1
        conn.hset(keys.task(task_id), "current_step", f"排队等待执行（第 {place} 位）")
    return outcome


def start_keys(task_id: str, owner: str) -> list[str]:
    """The keys start.lua takes for a task of `owner` ('' for a record without one)."""
    return [keys.task(task_id), keys.TASKS_WAITING, keys.task_stats(task_id), keys.TASKS_BY_UPDATED,
            *keys.status_indexes([PENDING, RUNNING], None),
            *(keys.tasks_with_status_of_owner(s, owner) for s in (PENDING, RUNNING) if owner)]


def holder_id(job_id: str, worker_name: str, pid: int) -> str:
    """One execution of a job: the horse (pid) of a worker running it. A job requeued and run again
    elsewhere is a new holder, so giving back a dead horse's slots never touches the new run's."""
    return f"{job_id}@{worker_name}#{pid}"


def release_holder(conn: redis.Redis, holder: str) -> None:
    """Give back every slot of a holder at once (after its work-horse exited, however it did)."""
    Scripts(conn).upstream_hold(keys=_KEYS, args=[holder, 0, 0, 0, 0])


def gate_for(conn: redis.Redis, settings: Settings, holder: str) -> UpstreamGate | None:
    """The gate of one job execution, or None when no global limit is set that could bind."""
    pace = PacePolicy.from_settings(settings)
    if settings.pacing.concurrency == 0 and pace is None:
        return None
    return UpstreamGate(conn, holder, settings.pacing.concurrency, pace, settings.pacing.job_concurrency)


class UpstreamGate:
    """A request gate for the upstream clients of one job: `with gate() as admission: send one request`, then
    `admission.answered(status, retry_after)` when it is paced (admission is None when it is not).

    Thread-safe; `close()` when the job ends gives its slots back (requests still waiting raise
    UpstreamGateClosed). Nothing touches Redis before the first request. `pace`: the per-second side
    (jobs.pacing), None for none.
    """

    def __init__(
        self, conn: redis.Redis, holder: str, concurrency: int, pace: PacePolicy | None, threads: int
    ) -> None:
        self.holder = holder
        self._conn = conn
        self._limit, self._threads = concurrency, max(1, threads)
        self._scripts = Scripts(conn)
        self._cond = threading.Condition()
        # Guarded by _cond: the local semaphore and what the heartbeat reports.
        self._cap = 0                # slots granted by the last renewal
        self._active = 0             # requests in flight
        self._waiting = 0            # threads waiting for a slot
        self._valid_until = 0.0      # monotonic: the lease is surely alive until then
        self._asked = 0              # the want of the last renewal
        self._peak = 0               # most requests in flight since the last renewal
        self._starved = False        # a thread waited since the last renewal
        self._shrinking = False      # the last renewal asked to shrink below what is in flight
        self._closed = False
        self._beat: threading.Thread | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._outage_logged = False
        self._pacer = Pacer(conn, holder, pace, self._stop, self._wake.set) if pace is not None else None

    @contextlib.contextmanager
    def __call__(self) -> Iterator[Admission | None]:
        self._take()
        try:
            yield self._pacer.admit() if self._pacer is not None else None
        finally:
            self._give()

    def close(self) -> None:
        """Give every slot back and stop the heartbeat; idempotent."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            beat = self._beat
            self._cond.notify_all()
        self._stop.set()
        self._wake.set()
        if self._pacer is not None and self._pacer.sent:
            log.info("upstream gate %s: %d requests paced, %d send times dropped (taken late)", self.holder,
                     self._pacer.sent, self._pacer.dropped)
        if beat is None:
            return  # never leased anything
        beat.join(timeout=2.0)  # a renewal in flight must not land after the release
        try:
            self._scripts.upstream_hold(keys=_KEYS, args=[self.holder, 0, 0, 0, 0])
        except redis.RedisError as exc:
            log.warning("upstream gate: could not release %s (%s); it lapses within %.0f s",
                        self.holder, exc, LEASE_SECONDS)

    # The local semaphore

    def _take(self) -> None:
        with self._cond:
            if self._beat is None and not self._closed:
                self._beat = threading.Thread(target=self._run, name="upstream-lease", daemon=True)
                self._beat.start()
            self._waiting += 1
            try:
                while not self._closed and (self._active >= self._cap or time.monotonic() >= self._valid_until):
                    self._starved = True
                    if self._asked < self._threads:
                        self._wake.set()  # ask for more now, not at the next renewal
                    self._cond.wait(POLL_SECONDS)
                if self._closed:
                    raise UpstreamGateClosed(f"the job holding {self.holder} has ended")
                self._active += 1
                self._peak = max(self._peak, self._active)
            finally:
                self._waiting -= 1

    def _give(self) -> None:
        with self._cond:
            self._active -= 1
            self._cond.notify()
            if self._shrinking and self._active <= self._cap:
                self._shrinking = False
                self._wake.set()  # the drained slots can go back to the holders waiting for them

    # The heartbeat: lease, renew, wait for slots (no other thread of the job talks to Redis for slots)

    def _run(self) -> None:
        delay, last = 0.0, 0.0
        while not self._stop.is_set():
            self._wake.wait(delay)
            gap = MIN_GAP_SECONDS - (time.monotonic() - last)
            if gap > 0:
                self._stop.wait(gap)
            self._wake.clear()
            if self._stop.is_set():
                return
            last = time.monotonic()
            delay = self._renew()

    def _renew(self) -> float:
        """One lease call; the seconds until the next one."""
        with self._cond:
            bound = max(self._active, self._cap)
            saturated = self._starved or self._waiting > 0 or self._asked == 0
            want = self._threads if saturated else max(1, self._peak)
            self._starved, self._peak = False, self._active
        sent = time.monotonic()
        try:
            reply = self._scripts.upstream_hold(keys=_KEYS, args=[self.holder, self._limit, want, bound, LEASE_SECONDS])
        except redis.RedisError as exc:
            self._log_outage(exc)
            return 1.0
        self._outage_logged = False
        grant = int(reply[0])
        with self._cond:
            self._asked, self._cap = want, grant
            self._valid_until = sent + LEASE_SECONDS - SAFETY_SECONDS
            self._shrinking = bound > grant and self._active > grant
            drained = bound > grant and not self._shrinking
            self._cond.notify_all()
        if drained:
            return 0.0  # the record still says `bound`: bring it down to the grant now
        return POLL_SECONDS if grant < want or 2 * grant > self._limit > 0 else RENEW_SECONDS

    def _log_outage(self, exc: redis.RedisError) -> None:
        if not self._outage_logged:
            self._outage_logged = True
            log.warning("upstream gate: cannot renew %s (%s); requests pause once its lease may have lapsed",
                        self.holder, exc)
