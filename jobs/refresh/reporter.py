"""Reporting a running refresh: weighted progress into the task record, mirrored into `job.meta`.

Writes are throttled: a province job may finish dozens of leaves a second, and the status only
needs to move a few times a second. The task record is the truth; `job.meta` is a mirror for
rq-dashboard and is rewritten whole each time (see the `save_meta` trap in DEVELOPERS.md).
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import redis
from rq.job import Job

from jobs import keys
from jobs.redis_values import as_text, as_text_map
from jobs.refresh.progress import Counters, compute_progress, eta_seconds
from jobs.scripts import Scripts

STATUS_INTERVAL = 0.5
META_INTERVAL = 1.0


class ProgressReporter:
    """Throttled, thread-safe progress writes for one job of a task."""

    def __init__(self, conn: redis.Redis, task_id: str, kind: str, job: Job | None) -> None:
        self.conn = conn
        self.task_id = task_id
        self.kind = kind
        self.job = job
        self._scripts = Scripts(conn)
        self._lock = threading.Lock()
        self._last_status = 0.0
        self._last_meta = 0.0
        self._step = ""
        started = conn.hget(keys.task(task_id), "started_at")
        self._started = datetime.fromisoformat(as_text(started)) if started else datetime.now(UTC)

    def report(self, step: str, force: bool = False) -> None:
        with self._lock:
            self._step = step
            now = time.monotonic()
            if not force and now - self._last_status < STATUS_INTERVAL:
                return
            self._last_status = now
        self._write(step, now)

    def flush(self) -> None:
        self.report(self._step, force=True)

    def _write(self, step: str, now: float) -> None:
        counters = Counters.from_hash(as_text_map(self.conn.hgetall(keys.task_stats(self.task_id))))
        progress = compute_progress(self.kind, counters)
        moment = datetime.now(UTC)
        eta = eta_seconds(progress, (moment - self._started).total_seconds())
        self._scripts.progress(
            keys=[keys.task(self.task_id)],
            args=[progress, step, moment.isoformat(timespec="seconds"), moment.timestamp(),
                  "" if eta is None else eta, keys.PREFIX],
        )
        if self.job is not None and now - self._last_meta >= META_INTERVAL:
            self._last_meta = now
            # Only JSON-safe values: a datetime here breaks rq-dashboard's JSON views.
            self.job.meta["refreshq"] = {
                "task_id": self.task_id, "progress": progress, "current_step": step,
                "statistics": counters.statistics(),
            }
            self.job.save_meta()  # type: ignore[no-untyped-call]
