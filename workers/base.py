"""What refreshq's two workers share: claiming (workers.claims), the order of their queues, the stop, drain,
takeover and command-channel mixins, the timings of their heartbeats, and one builder with a mode (`build`).

The forking worker (workers.RefreshqWorker) forks a work-horse per job; the fast one (workers.fast.FastWorker)
runs short named tasks in its own process. Both are built once per process from the settings it was started
with: their jobs get them from the job context (jobs.context).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from jobs import context, shutdown
from jobs import queues as queue_names
from jobs.config import Settings
from jobs.duties import abandoned
from jobs.errors import ValidationError
from jobs.reconnect import REFUSALS
from jobs.workforce import check_queues
from workers.channel import ChannelMixin
from workers.claims import Claimer
from workers.drain import DrainMixin
from workers.takeover import TakeoverMixin

# Seconds between the worker's heartbeats while a job runs.
JOB_MONITORING_INTERVAL = 5
# How long after its last heartbeat a running job counts as abandoned. RQ's default grace is 60 s;
# refreshq's scheduler cleans the started registries every few seconds, so a dead worker's job is
# resumed elsewhere within about 20 s instead of several minutes.
HEARTBEAT_GRACE = 10
# After a SIGTERM, how long the running job has to stop by itself before it is cut short (its work-horse
# killed, or the job interrupted): platforms allow about 10-30 s between SIGTERM and SIGKILL, and the
# worker must be gone before.
WARM_SHUTDOWN_BUDGET = 8.0


class WorkerBase(ChannelMixin, DrainMixin, TakeoverMixin):
    """Both workers' claims, queue order, registry maintenance and heartbeat timings."""

    job_context: context.JobContext | None = None  # set by build, before any job runs
    pool_name = ""  # the pool this worker belongs to (workers.pool), if any
    _claimer: Claimer | None = None

    @property
    def claimer(self) -> Claimer:
        if self._claimer is None:
            self._claimer = Claimer(self.connection, self.name, self.pool_name, self.serializer)
        return self._claimer

    def may_clean_registries(self) -> bool:
        # RQ's maintenance judges heartbeats too: not while writes are refused, nor soon after (jobs/reconnect.py).
        return not REFUSALS.within()

    def heartbeat_ttl(self, job: Job) -> int:
        return int(self.job_monitoring_interval) + HEARTBEAT_GRACE

    def queue_order_after(self, served: Queue) -> list[Queue]:
        # After every job, where RQ's dequeue strategies reorder the queues (jobs.queues.dequeue_order).
        by_name = {q.name: q for q in self.queues}
        current = tuple(q.name for q in self.ordered_queues)
        order = queue_names.dequeue_order(tuple(by_name), served.name, current)
        return [by_name[name] for name in order]


def preload_job_modules() -> None:
    """Import what jobs run before forking: each work-horse then starts warm instead of importing
    httpx, the clients and the region tree again (about 0.2 s of CPU per job), or looking libc up."""
    import httpcore  # noqa: F401 - httpx imports it only when the first client is built

    import jobs.named.runs
    import jobs.refresh.plan
    import jobs.refresh.province
    import jobs.upstream.client
    import jobs.upstream.http
    import jobs.upstream.llm
    import jobs.upstream.sample

    jobs.upstream.sample.load_tree()
    jobs.upstream.client.shared_tls_context()
    shutdown.libc_prctl()


W = TypeVar("W", bound=WorkerBase)


@dataclass(frozen=True)
class Mode(Generic[W]):
    """A kind of worker: its class, and the queues it refuses (with the reason)."""

    worker_class: type[W]
    refused: tuple[str, ...] = ()
    refusal: str = ""


def build(mode: Mode[W], conn: redis.Redis, names: Sequence[str], name: str | None = None,
          settings: Settings | None = None, pool: str = "") -> W:
    """A worker of `mode` on `names`, its job modules preloaded and its job context built (from `settings`,
    or this process's): once, before it runs any job."""
    check_queues(names)
    if any(n in mode.refused for n in names):
        raise ValidationError(mode.refusal)
    queue_names.register_queues(conn)
    preload_job_modules()
    worker = mode.worker_class(
        queue_names.queues(conn, queue_names.dequeue_order(tuple(names))),
        connection=conn,
        name=name,
        serializer=JSONSerializer,
        job_monitoring_interval=JOB_MONITORING_INTERVAL,
        exception_handlers=abandoned.HANDLERS,  # also RQ's own cleanup of the started registries
    )
    worker.job_context = context.JobContext(settings or context.process_settings())
    worker.pool_name = pool
    return worker
