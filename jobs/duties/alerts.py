"""Scheduler duty: evaluate the alert rules every REFRESHQ_ALERT_INTERVAL seconds (jobs.observe.alert_state),
and keep this process's delivery thread delivering while it is the active scheduler (jobs.observe.delivery).

The evaluation is a few reads and one transaction; delivery runs in its own thread, so a slow or dead
channel never holds up the tick. While Redis refuses writes neither can happen: the active scheduler's
RefusalAlarm sends that one alert around the outbox (jobs.observe.refusal_alarm).
"""

from __future__ import annotations

import time

import redis

from jobs.config import Settings
from jobs.observe import alert_state
from jobs.observe.delivery import Deliverer
from jobs.observe.refusal_alarm import RefusalAlarm
from jobs.reconnect import REFUSALS

# The delivery thread delivers while the duty ran this recently (the active scheduler ticks every second).
ACTIVE_SECONDS = 5.0


class AlertDuty:
    """The duty; `close()` stops its delivery thread when the scheduler stops."""

    __name__ = "evaluate_alerts"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.deliverer: Deliverer | None = None
        self.alarm: RefusalAlarm | None = None
        self._called_at = float("-inf")

    def __call__(self, conn: redis.Redis) -> None:
        self._called_at = time.monotonic()
        if self.deliverer is None:
            self.deliverer = Deliverer(conn, self.settings)
            self.alarm = RefusalAlarm(self.settings, conn, self.active)
            REFUSALS.watch(self.alarm)
        self.deliverer.keep_active(ACTIVE_SECONDS)
        plan = alert_state.evaluate_if_due(conn, self.settings)
        if plan is not None and plan.notify:
            self.deliverer.wake()

    def active(self) -> bool:
        """Whether this process is the active scheduler (it ran the duty in the last ACTIVE_SECONDS)."""
        return time.monotonic() - self._called_at < ACTIVE_SECONDS

    def close(self) -> None:
        if self.alarm is not None:
            REFUSALS.unwatch(self.alarm)
        if self.deliverer is not None:
            self.deliverer.stop()
