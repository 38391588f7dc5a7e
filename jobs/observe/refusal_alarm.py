"""The alert while Redis refuses writes (`redis_refusing_writes`, critical), sent around the outbox.

An alert's state and its notice are written to Redis in one transaction (jobs.observe.alert_state), and a
notice is delivered from the outbox: neither can happen while writes are refused, and the scheduler's own
tick waits at its first write. So the scheduler that was active when its writes were first refused (no
standby ever is) sends this one alert straight to the channels once the refusal has lasted ALERT_AFTER
seconds, each channel tried once with the alert timeout, and its resolved notice when writes are taken
again; the attempts are recorded in the delivery log (`refreshq alerts list`) then. Nothing is retried:
a notice that no channel took is lost, which `refreshq health` (exit 3) and the workers' log lines are
there to cover. A refusal shorter than ALERT_AFTER, or one that comes and goes (a Redis at the edge of
its maxmemory), is not alerted here: the `redis_memory` alert rule, delivered as any other, sees it first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from jobs.config import Settings
from jobs.errors import AlertDeliveryError
from jobs.observe import channels as channel_senders
from jobs.observe.alert_state import FIRING, RESOLVED, fingerprint, notice_alert
from jobs.observe.channels import Notice
from jobs.observe.delivery import DELIVERED, GAVE_UP, record_attempt
from jobs.observe.health import CRITICAL

log = logging.getLogger("refreshq.alerts")

RULE, SUBJECT = "redis_refusing_writes", "redis"
# Seconds writes must stay refused before the alert is sent.
ALERT_AFTER = 10.0


class RefusalAlarm:
    """A watcher of this process's refused writes (jobs.reconnect.REFUSALS) that alerts while `active()`."""

    def __init__(self, settings: Settings, conn: redis.Redis, active: Callable[[], bool]) -> None:
        self.settings, self.conn, self.active = settings, conn, active
        self._lock = threading.Lock()
        self._episode: dict[str, Any] | None = None
        self._attempts: list[tuple[Notice, str, str, str | None, float]] = []

    def refusal_started(self, reason: str, message: str) -> None:
        if not self.settings.alerts.channels or not self.active():
            return
        with self._lock:
            if self._episode is not None:
                return
            self._episode = episode = {"since": time.time(), "reason": reason, "message": message, "sent": False}
        timer = threading.Timer(ALERT_AFTER, self._fire, args=(episode,))
        timer.daemon = True
        timer.start()

    def refusal_ended(self, seconds: float) -> None:
        with self._lock:
            episode, self._episode = self._episode, None
        if episode is not None and episode["sent"]:
            episode["description"] += f"; writes are taken again after {seconds:.0f} s"
            threading.Thread(target=self._resolve, args=(episode,), name="refusal-alarm", daemon=True).start()

    def _fire(self, episode: dict[str, Any]) -> None:
        with self._lock:
            if self._episode is not episode:
                return  # writes were taken again in time
            episode["sent"] = True
            episode["description"] = (f"Redis refuses writes ({episode['reason']}: {episode['message']}): "
                                      "workers and the scheduler wait, running tasks do not move")
        self._send(episode, FIRING)

    def _resolve(self, episode: dict[str, Any]) -> None:
        self._send(episode, RESOLVED)
        try:
            for attempt in self._attempts:
                record_attempt(self.conn, *attempt, stored=False)
        except redis.RedisError as exc:
            log.warning("alerts: could not record the %s notices (%s)", RULE, exc)
        self._attempts.clear()

    def _send(self, episode: dict[str, Any], status: str) -> None:
        now = time.time()
        state = {"rule": RULE, "subject": SUBJECT, "severity": CRITICAL, "since": episode["since"],
                 "fingerprint": fingerprint(RULE, SUBJECT), "summary": "Redis refuses writes",
                 "description": episode["description"]}
        # The same id on every channel and a new one per status: a receiver drops a repeat by it.
        notice = Notice(f"{int(episode['since'])}-refused-writes-{status}", [notice_alert(state, status, now)])
        for channel in self.settings.alerts.channels:
            started = time.time()
            try:
                note = channel_senders.send(channel, self.settings.alerts.delivery, notice)
            except AlertDeliveryError as exc:
                log.warning("alerts: %s notice (%s) not delivered by %s: %s", RULE, status, channel, exc)
                self._attempts.append((notice, channel, GAVE_UP, str(exc), started))  # not tried again
                continue
            log.info("alerts: %s notice (%s) delivered by %s, around the outbox", RULE, status, channel)
            self._attempts.append((notice, channel, DELIVERED, note, started))
