"""What `refreshq info` shows: the server in use, queues with counts, workers."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import redis
from rq import Worker
from rq.job import Job
from rq.serializers import JSONSerializer

from jobs import queues
from jobs.config import Settings
from jobs.connection import server_url
from jobs.redact import mask_url


@dataclass(frozen=True)
class QueueCounts:
    name: str
    queued: int
    started: int
    failed: int
    finished: int


@dataclass(frozen=True)
class InfoReport:
    server: str
    queues: list[QueueCounts]
    workers: list[str]


def collect_info(settings: Settings, conn: redis.Redis) -> InfoReport:
    queues.register_queues(conn)
    counts = [
        QueueCounts(
            name=q.name,
            queued=q.count,
            started=q.started_job_registry.count,
            failed=q.failed_job_registry.count,
            finished=q.finished_job_registry.count,
        )
        for q in queues.queues(conn)
    ]
    workers = [
        f"{w.name} ({w.get_state()}) on {','.join(w.queue_names())}" for w in Worker.all(connection=conn)
    ]
    return InfoReport(server=_describe(settings), queues=counts, workers=workers)


def _describe(settings: Settings) -> str:
    if settings.server.redis_url:
        return f"{mask_url(settings.server.redis_url)} (REDIS_URL)"
    return f"{server_url(settings)} (embedded, data in {settings.server.data_dir})"


def queue_report(conn: redis.Redis, now: float | None = None) -> list[dict[str, Any]]:
    """Each queue's depth, its oldest waiting job's age, and its registries' counts (a few round trips)."""
    now = time.time() if now is None else now
    rows = []
    for q in queues.queues(conn):
        oldest_id = q.get_job_ids(0, 1)  # RQ appends: the head is the job waiting longest (or one put in front)
        oldest = Job.fetch_many(oldest_id, connection=conn, serializer=JSONSerializer)[0] if oldest_id else None
        enqueued = oldest.enqueued_at if oldest is not None else None
        rows.append({
            "name": q.name, "depth": q.count,
            "oldest_job_id": oldest.id if oldest is not None else None,
            "oldest_job_age_seconds": round(now - enqueued.replace(tzinfo=UTC).timestamp(), 1) if enqueued else None,
            "started": q.started_job_registry.count, "scheduled": q.scheduled_job_registry.count,
            "deferred": q.deferred_job_registry.count, "failed": q.failed_job_registry.count,
            "finished": q.finished_job_registry.count,
        })
    return rows


def worker_report(conn: redis.Redis) -> list[dict[str, Any]]:
    """Every registered worker: name, state, queues, current job, heartbeat, counters."""
    rows = []
    for w in Worker.all(connection=conn, serializer=JSONSerializer):
        rows.append({
            "name": w.name, "hostname": w.hostname, "pid": w.pid, "state": str(w.get_state()),
            "queues": w.queue_names(), "current_job_id": w.get_current_job_id(),
            "last_heartbeat": w.last_heartbeat.isoformat(timespec="seconds") if w.last_heartbeat else None,
            "birth_date": w.birth_date.isoformat(timespec="seconds") if w.birth_date else None,
            "successful_jobs": w.successful_job_count, "failed_jobs": w.failed_job_count,
        })
    return sorted(rows, key=lambda r: r["name"])
