"""The alert outbox, delivered from the scheduler process, never from a worker: the "no worker" alert
must arrive with every worker down.

A delivery thread of the active scheduler claims due notices (jobs/scripts/claim_due.lua: a lease, recorded with
the scheduler lock's token, so a scheduler that dies mid-delivery leaves the notice to the next active one at
once) and tries each channel still pending, each attempt bounded by REFRESHQ_ALERT_TIMEOUT. A channel that
fails is tried again with the scheduler's backoff (REFRESHQ_RETRY_BASE, _FACTOR, _CAP), until it succeeds
or the notice is a day old; the other channels of the notice are not sent again. Every attempt is recorded
(the delivery log, the channel's state, the counters). A webhook carries the notice's id as webhook-id on
every attempt and an email its Message-ID, so a receiver can drop the one repeat a crash between sending
and recording could cause.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from datetime import UTC, datetime
from typing import Any

import redis

from jobs import keys
from jobs.backoff import backoff
from jobs.config import Settings
from jobs.errors import AlertDeliveryError
from jobs.observe import channels as channel_senders
from jobs.observe import counters
from jobs.observe.alert_state import rfc3339
from jobs.observe.channels import Notice
from jobs.redis_values import as_text, as_text_map, as_texts
from jobs.scripts import Scripts

log = logging.getLogger("refreshq.alerts")

GIVE_UP_SECONDS = 86_400.0
DELIVERED_TTL = 7 * 86_400       # a delivered notice is kept this long, for the record
DELIVERY_LOG_LENGTH = 200
POLL_SECONDS = 0.5
CLAIM_LIMIT = 10
PENDING, DELIVERED, DROPPED, GAVE_UP = "pending", "delivered", "dropped", "gave_up"
TEST_PREFIX = "test-"


def lease_seconds(settings: Settings) -> float:
    """Longer than any delivery of one notice can take (each network step of each channel is bounded)."""
    return 4 * settings.alerts.delivery.timeout * max(1, len(settings.alerts.channels)) + 30


def retry_delay(settings: Settings, attempt: int) -> float:
    """The scheduler's backoff (REFRESHQ_RETRY_BASE * _FACTOR ** (attempt - 1), capped), with jitter."""
    return max(0.05, backoff(attempt, settings.retry.base, settings.retry.factor, settings.retry.cap, jitter=0.2))


def _channel_state(conn: redis.Redis, channel: str, ok: bool, note: str | None, now: float) -> str:
    raw = conn.hget(keys.ALERT_CHANNELS, channel)
    state: dict[str, Any] = json.loads(raw) if raw else {}
    if ok:
        state.update(failures=0, last_ok_at=rfc3339(now), note=note)
    else:
        state.update(failures=int(state.get("failures", 0)) + 1, last_error=note, last_error_at=rfc3339(now))
    return json.dumps(state, ensure_ascii=False)


def record_attempt(
    conn: redis.Redis, notice: Notice, channel: str, outcome: str, note: str | None, started: float,
    stored: bool = True,
) -> None:
    """Record one delivery attempt: the notice's channel state (if `stored`), the log, the channel, counters."""
    now, ok = time.time(), outcome == DELIVERED
    entry = {"notice": notice.notice_id, "channel": channel, "status": notice.status, "outcome": outcome,
             "note": note, "at": rfc3339(now), "seconds": round(now - started, 3)}
    channel_state = _channel_state(conn, channel, ok, note, now)
    with conn.pipeline() as pipe:
        if stored:
            key = keys.alert_notice(notice.notice_id)
            pipe.hset(key, mapping={f"ch:{channel}": outcome, f"note:{channel}": note or ""})
            pipe.hincrby(key, f"tries:{channel}", 1)
        pipe.lpush(keys.ALERT_DELIVERIES, json.dumps(entry, ensure_ascii=False))
        pipe.ltrim(keys.ALERT_DELIVERIES, 0, DELIVERY_LOG_LENGTH - 1)
        pipe.hset(keys.ALERT_CHANNELS, channel, channel_state)
        if ok:
            status = "test" if notice.notice_id.startswith(TEST_PREFIX) else notice.status
            pipe.hincrby(keys.METRIC_COUNTERS, counters.name(counters.ALERTS_SENT, channel, status), 1)
        elif outcome == PENDING:
            pipe.hincrby(keys.METRIC_COUNTERS, counters.name(counters.ALERT_FAILURES, channel), 1)
        pipe.execute()
    if ok:
        log.info("alerts: notice %s (%s) delivered by %s", notice.notice_id, notice.status, channel)
    else:
        log.warning("alerts: notice %s not delivered by %s: %s", notice.notice_id, channel, note)


def _attempt(conn: redis.Redis, settings: Settings, notice: Notice, channel: str) -> None:
    started = time.time()
    if channel not in settings.alerts.channels:
        record_attempt(conn, notice, channel, DROPPED, "the channel is no longer configured", started)
        return
    try:
        note = channel_senders.send(channel, settings.alerts.delivery, notice)
    except AlertDeliveryError as exc:
        record_attempt(conn, notice, channel, PENDING, str(exc), started)
        return
    record_attempt(conn, notice, channel, DELIVERED, note, started)


def _pending(fields: dict[str, str]) -> list[str]:
    return [c for c in fields.get("channels", "").split(",") if c and fields.get(f"ch:{c}") == PENDING]


def deliver(conn: redis.Redis, settings: Settings, notice_id: str) -> bool:
    """Try every pending channel of a notice once; True when it is done (delivered, or given up)."""
    key = keys.alert_notice(notice_id)
    fields = as_text_map(conn.hgetall(key))
    if not fields:
        with conn.pipeline() as pipe:
            _settle(pipe, notice_id)
            pipe.execute()
        return True
    notice = Notice(notice_id, json.loads(fields["alerts"]))
    for channel in _pending(fields):
        _attempt(conn, settings, notice, channel)
    left = _pending(as_text_map(conn.hgetall(key)))
    now = time.time()
    if not left:
        with conn.pipeline() as pipe:
            _settle(pipe, notice_id, expire=key)
            pipe.execute()
        return True
    if now - float(fields["created_ts"]) > GIVE_UP_SECONDS:
        with conn.pipeline() as pipe:
            pipe.hset(key, mapping={f"ch:{c}": GAVE_UP for c in left})
            _settle(pipe, notice_id, expire=key)
            pipe.execute()
        log.error("alerts: gave up on notice %s after a day: %s never took it", notice_id, ", ".join(left))
        return True
    attempts = int(conn.hincrby(key, "attempts", 1))
    with conn.pipeline() as pipe:
        pipe.zadd(keys.ALERT_OUTBOX, {notice_id: now + retry_delay(settings, attempts)}, xx=True)
        pipe.hdel(keys.ALERT_CLAIMS, notice_id)
        pipe.execute()
    return False


def _settle(pipe: Any, notice_id: str, expire: str = "") -> None:
    """Queue on `pipe`: the notice is done, out of the outbox and unclaimed (its record kept DELIVERED_TTL
    when `expire` names it)."""
    pipe.zrem(keys.ALERT_OUTBOX, notice_id)
    pipe.hdel(keys.ALERT_CLAIMS, notice_id)
    if expire:
        pipe.expire(expire, DELIVERED_TTL)


def deliver_due(conn: redis.Redis, settings: Settings, stop: threading.Event | None = None) -> int:
    """Claim the due notices and try them; returns how many were claimed."""
    ids = as_texts(Scripts(conn).claim_due(keys=[keys.ALERT_OUTBOX, keys.ALERT_CLAIMS, keys.SCHEDULER_LOCK],
                                           args=[time.time(), lease_seconds(settings), CLAIM_LIMIT]))
    for notice_id in ids:
        if stop is not None and stop.is_set():
            break  # its claim lapses and the next scheduler takes it
        deliver(conn, settings, notice_id)
    return len(ids)


class Deliverer:
    """The delivery thread of a scheduler process; it delivers only while `keep_active` is renewed (each tick
    of the active scheduler), so a standby never delivers."""

    def __init__(self, conn: redis.Redis, settings: Settings) -> None:
        self.conn = conn
        self.settings = settings
        self._active_until = 0.0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alert-delivery", daemon=True)

    def keep_active(self, seconds: float) -> None:
        self._active_until = time.monotonic() + seconds
        if not self._thread.is_alive() and not self._stop.is_set():
            self._thread.start()

    def wake(self) -> None:
        """Look at the outbox now (a notice was just queued) instead of at the next poll."""
        self._wake.set()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop after the attempt in progress (waiting at most `timeout`: its claim lapses otherwise)."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(POLL_SECONDS)
            self._wake.clear()
            if self._stop.is_set() or time.monotonic() > self._active_until:
                continue
            try:
                deliver_due(self.conn, self.settings, self._stop)
            except redis.RedisError as exc:
                log.warning("alerts: delivery paused, Redis unavailable (%s)", exc)
            except Exception:
                log.exception("alerts: delivery failed unexpectedly; the notice is tried again later")


def test_notice(now: float) -> Notice:
    alert = {
        "status": channel_senders.FIRING,
        "labels": {"alertname": "refreshq_test", "severity": "info", "subject": "test", "service": "refreshq"},
        "annotations": {"summary": "refreshq test notice",
                        "description": "sent by `refreshq alerts test`: this channel works"},
        "startsAt": rfc3339(now), "endsAt": "0001-01-01T00:00:00Z", "fingerprint": "test", "generatorURL": "",
    }
    stamp = f"{datetime.fromtimestamp(now, UTC):%Y%m%dT%H%M%S}-{random.getrandbits(32):08x}"
    return Notice(f"{TEST_PREFIX}{stamp}", [alert])


def send_test(conn: redis.Redis, settings: Settings) -> dict[str, str | None]:
    """One test notice on every configured channel, now; channel -> None (delivered) or why not."""
    notice = test_notice(time.time())
    results: dict[str, str | None] = {}
    for channel in settings.alerts.channels:
        started = time.time()
        try:
            note = channel_senders.send(channel, settings.alerts.delivery, notice)
        except AlertDeliveryError as exc:
            results[channel] = str(exc)
            record_attempt(conn, notice, channel, PENDING, str(exc), started, stored=False)
            continue
        results[channel] = None
        record_attempt(conn, notice, channel, DELIVERED, note, started, stored=False)
    return results


def outbox_ids(conn: redis.Redis) -> list[str]:
    return [as_text(i) for i in conn.zrange(keys.ALERT_OUTBOX, 0, -1)]
