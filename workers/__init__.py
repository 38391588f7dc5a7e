"""The refreshq worker: an RQ worker on refreshq's queues, JSON-serialized, with short heartbeats."""

from __future__ import annotations

import signal
from collections.abc import Sequence

import redis
from rq import Worker
from rq.job import Job
from rq.serializers import JSONSerializer

from jobs import queues as queue_names
from jobs import shutdown
from jobs.errors import ValidationError

# Seconds between the worker's heartbeats while a job runs.
JOB_MONITORING_INTERVAL = 5
# How long after its last heartbeat a running job counts as abandoned. RQ's default grace is 60 s;
# refreshq's scheduler cleans the started registries every few seconds, so a dead worker's job is
# resumed elsewhere within about 20 s instead of several minutes.
HEARTBEAT_GRACE = 10


class RefreshqWorker(Worker):
    """A forking RQ worker whose jobs are declared abandoned soon after their worker dies, and whose
    warm shutdown (SIGTERM) asks the running job to checkpoint and requeue instead of waiting for it."""

    def get_heartbeat_ttl(self, job: Job) -> int:
        return int(self.job_monitoring_interval) + HEARTBEAT_GRACE

    def setup_work_horse_signals(self) -> None:
        shutdown.install_horse_handlers()

    def handle_warm_shutdown_request(self) -> None:
        super().handle_warm_shutdown_request()  # type: ignore[no-untyped-call]
        if self.horse_pid:
            self.log.info("Worker %s: asking job in work-horse %s to checkpoint and requeue", self.name, self.horse_pid)
            self.kill_horse(sig=signal.SIGTERM)


def preload_job_modules() -> None:
    """Import what jobs run before forking: each work-horse then starts warm instead of importing
    httpx, the clients and the region tree again (about 0.2 s of CPU per job)."""
    import httpcore  # noqa: F401 - httpx imports it only when the first client is built

    import jobs.refresh
    import jobs.runs
    import jobs.upstream.http
    import jobs.upstream.llm
    import jobs.upstream.sample

    jobs.upstream.sample.load_tree()
    jobs.upstream.http.shared_tls_context()


def build_worker(
    conn: redis.Redis, names: Sequence[str] = queue_names.ALL_QUEUES, name: str | None = None
) -> RefreshqWorker:
    unknown = [n for n in names if n not in queue_names.ALL_QUEUES]
    if unknown:
        raise ValidationError(
            f"unknown queue {', '.join(unknown)}: expected one of {', '.join(queue_names.ALL_QUEUES)}"
        )
    queue_names.register_queues(conn)
    preload_job_modules()
    return RefreshqWorker(
        queue_names.queues(conn, tuple(names)),
        connection=conn,
        name=name,
        serializer=JSONSerializer,
        job_monitoring_interval=JOB_MONITORING_INTERVAL,
    )
