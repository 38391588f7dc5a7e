"""Weighted progress of a refresh, as the reference design weighs it, and its reporting while a job runs.

Counters live in one Redis hash per task (see `keys.task_stats`), incremented exactly once per
region by the `count_once` script, so a re-run never counts a region twice.

Progress writes are throttled: a province job may finish dozens of leaves a second, and the status only
needs to move a few times a second. The task record is the truth; `job.meta` is a mirror for
rq-dashboard and is rewritten whole each time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import redis
from rq.job import Job

from jobs import keys
from jobs.redis_values import as_text
from jobs.refresh.fence import Fence, unfenced
from jobs.scripts import Scripts
from jobs.statuses import RUNNING

# Full refresh: province 10%, city 20%, district 30%, hospital 40%. Province refresh: 20/30/50.
FULL_WEIGHTS = {"provinces": 10, "cities": 20, "districts": 30, "hospitals": 40}
PROVINCE_WEIGHTS = {"cities": 20, "districts": 30, "hospitals": 50}

# Until the first province is walked the size of the tree is unknown; the reference design's
# national totals stand in for it (per province, for the unwalked ones).
REFERENCE_CITIES_PER_PROVINCE = 334 / 34
REFERENCE_DISTRICTS_PER_PROVINCE = 2844 / 34


@dataclass(frozen=True)
class Counters:
    """The counters of one task, read from its stats hash."""

    provinces_total: int = 0
    provinces_walked: int = 0
    provinces_processed: int = 0
    cities_total: int = 0
    cities_processed: int = 0
    districts_total: int = 0
    districts_processed: int = 0
    leaves_total: int = 0
    leaves_done: int = 0
    hospitals_found: int = 0

    @classmethod
    def from_hash(cls, raw: Mapping[str, str]) -> Counters:
        fields = cls.__dataclass_fields__
        values = {k: int(v) for k, v in raw.items() if k in fields}
        return cls(**values)

    def statistics(self) -> dict[str, int]:
        """The `statistics` of the status dict."""
        return {
            "provinces_processed": self.provinces_processed,
            "cities_processed": self.cities_processed,
            "districts_processed": self.districts_processed,
            "hospitals_found": self.hospitals_found,
        }


# By name: the stats hash holds three fields per province too, which a progress or status read needs not.
COUNTER_FIELDS = tuple(Counters.__dataclass_fields__)


def read_counters(conn: redis.Redis, task_id: str) -> Counters:
    found = conn.hmget(keys.task_stats(task_id), COUNTER_FIELDS)
    return Counters.from_hash({n: as_text(v) for n, v in zip(COUNTER_FIELDS, found, strict=True) if v is not None})


def _fraction(done: int, total: float) -> float:
    return min(1.0, done / total) if total > 0 else 0.0


def _estimated(known: int, c: Counters, per_province: float) -> float:
    """Total regions at a level: what walked provinces showed, extrapolated to the unwalked ones."""
    unwalked = max(0, c.provinces_total - c.provinces_walked)
    if unwalked == 0:
        return float(known)
    average = known / c.provinces_walked if c.provinces_walked else per_province
    return known + unwalked * average


def compute_progress(kind: str, c: Counters) -> int:
    """0-99 while running (100 is reserved for a finished task)."""
    cities = _fraction(c.cities_processed, _estimated(c.cities_total, c, REFERENCE_CITIES_PER_PROVINCE))
    districts = _fraction(
        c.districts_processed, _estimated(c.districts_total, c, REFERENCE_DISTRICTS_PER_PROVINCE)
    )
    hospitals = _fraction(c.leaves_done, _estimated(c.leaves_total, c, REFERENCE_DISTRICTS_PER_PROVINCE))
    if kind == "province":
        w = PROVINCE_WEIGHTS
        value = w["cities"] * cities + w["districts"] * districts + w["hospitals"] * hospitals
    else:
        w = FULL_WEIGHTS
        provinces = _fraction(c.provinces_processed, c.provinces_total)
        value = (
            w["provinces"] * provinces + w["cities"] * cities + w["districts"] * districts
            + w["hospitals"] * hospitals
        )
    return min(99, int(value))


def eta_seconds(progress: int, elapsed: float) -> int | None:
    """Remaining seconds if the rate so far holds; None before there is a rate."""
    if progress <= 0 or elapsed <= 0:
        return None
    if progress >= 100:
        return 0
    return int(elapsed * (100 - progress) / progress)


STATUS_INTERVAL = 0.5
META_INTERVAL = 1.0


class ProgressReporter:
    """Throttled, thread-safe progress writes for one job of a task."""

    def __init__(self, conn: redis.Redis, task_id: str, kind: str, job: Job | None, fence: Fence | None = None) -> None:
        self.conn = conn
        self.task_id = task_id
        self.fence = fence or unfenced(task_id)
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
        counters = read_counters(self.conn, self.task_id)
        progress = compute_progress(self.kind, counters)
        moment = datetime.now(UTC)
        eta = eta_seconds(progress, (moment - self._started).total_seconds())
        written = self._scripts.progress(
            keys=[keys.task(self.task_id), self.fence.owners, keys.METRIC_COUNTERS, keys.TASKS_BY_UPDATED,
                  keys.tasks_with_status_by_updated(RUNNING)],
            args=[progress, step, moment.isoformat(timespec="seconds"), moment.timestamp(),
                  "" if eta is None else eta, *self.fence.args()],
        )
        self.fence.checked(written, "progress")  # a stale execution writes no progress, nor its job's meta
        if self.job is not None and now - self._last_meta >= META_INTERVAL:
            self._last_meta = now
            # Only JSON-safe values: a datetime here breaks rq-dashboard's JSON views.
            self.job.meta["refreshq"] = {
                "task_id": self.task_id, "progress": progress, "current_step": step,
                "statistics": counters.statistics(),
            }
            self.job.save_meta()  # type: ignore[no-untyped-call]
