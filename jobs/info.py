"""What `refreshq info` shows: the server in use, queues with counts, workers."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from rq import Worker

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
    if settings.redis_url:
        return f"{mask_url(settings.redis_url)} (REDIS_URL)"
    return f"{server_url(settings)} (embedded, data in {settings.data_dir})"
