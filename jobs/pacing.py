"""Requests per second to the upstream, paced by send time and shared by every worker on every machine: the
per-second side of the upstream gate (jobs.limits holds the in-flight side and calls this).

- A request counts when it is sent. A GCRA in Redis (jobs.scripts.gate) hands out send times (*tickets*)
  1/rate apart to every holder together, a few at a time and at most HORIZON_SECONDS ahead: one round trip
  per batch of tickets, none per answer. A ticket not used within `late` seconds of its time (a thread that
  woke late, a work-horse that was paused) is dropped and another one taken, so no one-second window of
  send times holds more than the cap.
- REFRESHQ_UPSTREAM_RPS=N is a hard cap: requests are sent at N less REFRESHQ_UPSTREAM_RPS_MARGIN (3%: room
  for the time between sending here and arriving there; tickets are dropped after 80% of it).
- Unset or `auto`: the rate is learned (AIMD, jobs.scripts.gate): nothing limits it until the upstream
  throttles (a holder then asks Redis once per FREE_SECONDS, not per request, and says how many it sent);
  then it backs off and grows back towards where it was throttled, slowly near it.
- A throttling answer (429, or 503 with Retry-After) pauses every worker's requests until the time it names
  (at most REFRESHQ_UPSTREAM_PAUSE_MAX; a 429 naming none: PAUSE_DEFAULT_SECONDS), from the moment it arrived.
  A clear rise of the answer time (LatencyWatch) backs a learned rate off too.
- REFRESHQ_UPSTREAM_RPS=0: none of this (no pacing, no pause, a Retry-After waited for by its own thread).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from jobs import keys
from jobs.config import Settings
from jobs.errors import UpstreamGateClosed
from jobs.redis_values import as_text_map
from jobs.scripts import Scripts

log = logging.getLogger("refreshq.limits")

AUTO, FIXED = "auto", "fixed"
# Tickets reach this far ahead of Redis' clock: a pause recorded meanwhile stops every worker within it.
HORIZON_SECONDS = 0.05
# A 429 without Retry-After pauses every worker this long.
PAUSE_DEFAULT_SECONDS = 1.0
# The pace hash (the learned rate above all) is forgotten after this long unused.
STATE_TTL_SECONDS = 7 * 86_400
# Tickets one round trip takes at most (one per waiting thread of the holder).
MAX_TICKETS = 64
# Between tries while Redis is away, or while the holder's lease is being renewed.
RETRY_SECONDS = 0.5
# A ticket is used at most this long after its time with a learned rate (a configured one: 80% of its margin).
AUTO_LATE_SECONDS = 0.025


@dataclass(frozen=True)
class PacePolicy:
    """How one process paces: FIXED at `rate` requests sent per second (the cap less its margin), or AUTO."""

    mode: str
    rate: float = 0.0
    cap: float = 0.0
    late: float = AUTO_LATE_SECONDS
    pause_max: float = 60.0

    @classmethod
    def from_settings(cls, settings: Settings) -> PacePolicy | None:
        """None for REFRESHQ_UPSTREAM_RPS=0 (no per-second limit)."""
        cap, margin = settings.pacing.rps, settings.pacing.rps_margin
        if cap is None:
            return cls(AUTO, pause_max=settings.pacing.pause_max)
        if cap == 0:
            return None
        # A window of one second then holds at most floor(cap * (1 - margin) * (1 + late)) + 1 <= cap sends.
        late = max(0.005, min(0.1, 0.8 * margin / (1 - margin)))
        return cls(FIXED, cap * (1 - margin), cap, late, settings.pacing.pause_max)


class LatencyWatch:
    """A clear rise in answer time: the median of the last WINDOW answers above RISE times the lowest such
    median seen (the baseline) plus FLOOR seconds. Told once per WINDOW answers at most; the baseline starts
    again from what is seen then, so an upstream that is slower for good is backed off from once."""

    WINDOW, RISE, FLOOR = 32, 2.0, 0.25

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._recent: collections.deque[float] = collections.deque(maxlen=self.WINDOW)
        self._since = 0
        self._baseline: float | None = None

    def rising(self, seconds: float) -> bool:
        with self._lock:
            self._recent.append(seconds)
            self._since += 1
            if self._since < self.WINDOW or self._since % 8:
                return False
            median = sorted(self._recent)[self.WINDOW // 2]
            if self._baseline is None or median < self._baseline:
                self._baseline = median
                return False
            if median <= self._baseline * self.RISE + self.FLOOR:
                return False
            self._baseline, self._since = median, 0
            return True


class Admission:
    """One request let through: told its answer (status, Retry-After) by the client."""

    __slots__ = ("_pacer", "free", "sent")

    def __init__(self, pacer: Pacer, sent: float, free: bool = False) -> None:
        self._pacer, self.sent, self.free = pacer, sent, free

    def answered(self, status: int, retry_after: float | None, elapsed: float | None = None) -> None:
        """`elapsed`: seconds from sending to the whole answer (httpx's Response.elapsed), so a report made
        late (the work-horse was paused since) is dated to the answer, not to the report."""
        self._pacer.answered(self.sent, status, retry_after, elapsed, self.free)


class Pacer:
    """The per-second pacing of one holder (a job execution's gate): `admit()` blocks until a request may be
    sent. Thread-safe; stops (UpstreamGateClosed) once `stop` is set. `renew` asks the gate to renew its
    lease now (the pacing scripts refuse a holder whose lease lapsed)."""

    def __init__(
        self, conn: redis.Redis, holder: str, policy: PacePolicy, stop: threading.Event, renew: Callable[[], None]
    ) -> None:
        self.holder, self.policy = holder, policy
        self._scripts = Scripts(conn)
        self._stop, self._renew = stop, renew
        self._take_lock = threading.Lock()  # one round trip for tickets at a time; the others use its tickets
        self._lock = threading.Lock()
        # Send times, in order, as (earliest, latest) on the monotonic clock: Redis' clock read somewhere
        # between asking and hearing back, a ticket is sent no sooner than it may be on any reading of it,
        # and no later than `late` after it on any reading either.
        self._tickets: collections.deque[tuple[float, float]] = collections.deque()
        self._waiting = 0
        self._paused_until = 0.0  # monotonic: a pause this holder knows of
        self._latency = LatencyWatch()
        self._outage_logged = False
        self.sent = 0     # requests let through
        self.dropped = 0  # send times not used in time (a thread woke late)
        self._unreported = 0  # ...of which Redis was not told yet
        # Nothing learned yet (auto): requests go out freely until then (monotonic), counted for Redis.
        self._free_until = 0.0
        self._free_sent = 0

    def admit(self) -> Admission:
        with self._lock:
            self._waiting += 1
        try:
            while True:
                with self._lock:
                    now = time.monotonic()
                    if now < self._free_until and now >= self._paused_until:
                        self.sent += 1
                        self._free_sent += 1
                        return Admission(self, now, free=True)
                ticket = self._ticket()
                if ticket is None:
                    continue  # no rate to keep: free for a while
                when, latest = ticket
                delay = when - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    raise UpstreamGateClosed(f"the job holding {self.holder} has ended")
                now = time.monotonic()
                if now <= latest and now >= self._paused_until:
                    with self._lock:
                        self.sent += 1
                    return Admission(self, now)
                with self._lock:
                    self.dropped += 1
                    self._unreported += 1
        finally:
            with self._lock:
                self._waiting -= 1

    def answered(
        self, sent: float, status: int, retry_after: float | None, elapsed: float | None = None, free: bool = False
    ) -> None:
        """Told by the client after each answer: a throttling one pauses every holder, and a learned rate
        backs off on it and on a clear rise in answer time. `free`: the request was sent before any rate was
        learned (it tells nothing of a rate learned since)."""
        arrived = time.monotonic() if elapsed is None else sent + elapsed
        if status == 429 or (status == 503 and retry_after is not None):
            wait = PAUSE_DEFAULT_SECONDS if retry_after is None else min(retry_after, self.policy.pause_max)
            with self._lock:
                self._paused_until = max(self._paused_until, arrived + wait)
                self._tickets.clear()
                self._free_until = 0.0
            self._report(str(status), sent, arrived, retry_after, free)
        elif status < 300 and self.policy.mode == AUTO and self._latency.rising(arrived - sent):
            self._report("latency", sent, arrived, None, free)

    def _ticket(self) -> tuple[float, float] | None:
        """When this thread's request may be sent: from, until (monotonic); None: freely for now."""
        with self._take_lock:
            while True:
                if self._stop.is_set():
                    raise UpstreamGateClosed(f"the job holding {self.holder} has ended")
                with self._lock:
                    now = time.monotonic()
                    while self._tickets and now > self._tickets[0][1]:
                        self._tickets.popleft()
                        self.dropped += 1
                        self._unreported += 1
                    if self._tickets:
                        return self._tickets.popleft()
                    if now < self._free_until:
                        return None
                    want = min(MAX_TICKETS, max(1, self._waiting))
                    wait = self._paused_until - now
                if wait <= 0:
                    wait = self._take(want)
                if wait < 0:
                    return None
                if wait > 0:
                    self._stop.wait(wait)

    def _take(self, want: int) -> float:
        """One round trip for up to `want` tickets; the seconds to wait before the next try (0: got some; -1:
        no rate to keep yet, send freely)."""
        policy = self.policy
        with self._lock:
            dropped, self._unreported = self._unreported, 0
            free_sent, self._free_sent = self._free_sent, 0
        args: list[str | float] = [self.holder, policy.mode, policy.rate, policy.cap or "", want, HORIZON_SECONDS,
                                   STATE_TTL_SECONDS * 1000, dropped, free_sent]
        asked = time.monotonic()
        try:
            reply = [int(x) for x in self._scripts.upstream_pace_take(keys=[keys.UPSTREAM_HOLDERS, keys.UPSTREAM_PACE],
                                                                      args=args)]
        except redis.RedisError as exc:
            with self._lock:
                self._unreported += dropped
                self._free_sent += free_sent
            self._log_outage(exc)
            return RETRY_SECONDS
        self._outage_logged = False
        received = time.monotonic()
        if reply[0] == -2:
            self._renew()  # the lease lapsed (Redis was away): renew it first
            return RETRY_SECONDS
        if reply[0] == -3:
            with self._lock:
                self._free_until = asked + reply[1] / 1e6
            return -1.0
        if reply[0] == 0:
            if reply[2]:
                with self._lock:
                    self._paused_until = max(self._paused_until, received + reply[1] / 1e6)
            return max(0.001, reply[1] / 1e6)
        count, first, interval = reply[0], reply[1] / 1e6, reply[2] / 1e6
        # A reply heard long after it was made (this process was starved of CPU) gives send times too
        # uncertain to keep within `late`: they are dropped like late ones, and a new batch taken.
        tickets = [(received + first + i * interval, asked + first + i * interval + policy.late) for i in range(count)]
        with self._lock:
            self._tickets.extend(t for t in tickets if t[0] <= t[1])
            late = sum(1 for t in tickets if t[0] > t[1])
            self.dropped += late
            self._unreported += late
        return 0.0

    def _report(self, signal: str, sent: float, answered: float, retry_after: float | None, free: bool) -> None:
        policy, now = self.policy, time.monotonic()
        with self._lock:
            free_sent, self._free_sent = self._free_sent, 0
        args: list[str | float] = [self.holder, policy.mode, signal, now - sent, now - answered,
                                   -1 if retry_after is None else retry_after, policy.pause_max, PAUSE_DEFAULT_SECONDS,
                                   STATE_TTL_SECONDS * 1000, free_sent, int(free)]
        try:
            self._scripts.upstream_pace_report(
                keys=[keys.UPSTREAM_HOLDERS, keys.UPSTREAM_PACE, keys.METRIC_COUNTERS], args=args
            )
        except redis.RedisError as exc:
            with self._lock:
                self._free_sent += free_sent
            self._log_outage(exc)  # the pause still holds for this holder's own requests

    def _log_outage(self, exc: redis.RedisError) -> None:
        if not self._outage_logged:
            self._outage_logged = True
            log.warning("upstream pacing: Redis is away (%s); %s retries every %.1f s", exc, self.holder,
                        RETRY_SECONDS)


def pace_fields() -> list[str]:
    """The pace hash's fields a reader asks for (queue `HMGET keys.UPSTREAM_PACE *pace_fields()`)."""
    return ["mode", "rate", "ceiling", "configured", "paused_until", "seen_at"]


def pace_view(values: list[Any], now: float | None = None) -> dict[str, Any] | None:
    """What the status dict, the pages and /metrics show of the pacing, from the HMGET of pace_fields(): the
    mode, the rate every worker together sends at most now (the configured cap; the learned rate; None: not
    limited yet), the rate a learned one backed off from when last throttled, the pause (until when, and the
    seconds left), when a worker last paced. None when no worker has paced (or none for 7 days)."""
    raw = as_text_map({name: v for name, v in zip(pace_fields(), values, strict=True) if v is not None})
    if not raw.get("mode"):
        return None
    now = time.time() if now is None else now
    mode = raw["mode"]
    cap = float(raw["configured"]) if raw.get("configured") else None
    rate = float(raw["rate"]) if mode == AUTO and raw.get("rate") else None
    paused = float(raw.get("paused_until") or 0)
    return {
        "mode": mode,
        "rate": cap if mode == FIXED else (round(rate, 2) if rate else None),
        "learned_from": round(float(raw["ceiling"]), 2) if mode == AUTO and raw.get("ceiling") else None,
        "paused_until": _iso(paused) if paused > now else None,
        "paused_seconds": round(max(0.0, paused - now), 3),
        "paced_at": _iso(float(raw["seen_at"])) if raw.get("seen_at") else None,
    }


def pacing_text(view: dict[str, Any] | None) -> str:
    """A pace_view in a few words (the CLI's status and the refresh page; web/pages/static/refreshq.js too)."""
    if not view:
        return ""
    if view["mode"] == FIXED:
        text = f"{view['rate']:g}/s (REFRESHQ_UPSTREAM_RPS)"
    elif view["rate"] is None:
        text = "learning: nothing throttled yet, not limited"
    else:
        text = f"{view['rate']:g}/s learned (throttled at {view['learned_from']:g}/s)"
    if view.get("paused_until"):
        text += f"; paused until {view['paused_until']} (Retry-After)"
    return text


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")
