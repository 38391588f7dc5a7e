"""Scheduler duty: evaluate the alert rules every REFRESHQ_ALERT_INTERVAL seconds (jobs.observe.alert_state),
and keep this process's delivery thread delivering while it is the active scheduler (jobs.observe.delivery).

The evaluation is a few reads and one transaction; delivery runs in its own thread, so a slow or dead
channel never holds up the tick.
"""

from __future__ import annotations

import redis

from jobs.config import Settings
from jobs.observe import alert_state
from jobs.observe.delivery import Deliverer

# The delivery thread delivers while the duty ran this recently (the active scheduler ticks every second).
ACTIVE_SECONDS = 5.0


class AlertDuty:
    """The duty; `close()` stops its delivery thread when the scheduler stops."""

    __name__ = "evaluate_alerts"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.deliverer: Deliverer | None = None

    def __call__(self, conn: redis.Redis) -> None:
        if self.deliverer is None:
            self.deliverer = Deliverer(conn, self.settings)
        self.deliverer.keep_active(ACTIVE_SECONDS)
        plan = alert_state.evaluate_if_due(conn, self.settings)
        if plan is not None and plan.notify:
            self.deliverer.wake()

    def close(self) -> None:
        if self.deliverer is not None:
            self.deliverer.stop()
