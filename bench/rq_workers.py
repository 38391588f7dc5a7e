"""RQ's own workers for the short-job baselines (`rq worker -w bench.rq_workers.Worker`, `...SimpleWorker`):
RQ's classes unchanged but for their command channel, listened to as refreshq's workers do
(workers/channel.py). On redis-py 8.2 RQ's listener holds one burst worker's exit in four for 60 s, which
a drain timed to the last worker's exit would count as RQ's time."""

from __future__ import annotations

from rq.worker import SimpleWorker as RQSimpleWorker
from rq.worker import Worker as RQWorker

from workers.channel import ChannelMixin


class Worker(ChannelMixin, RQWorker):
    """RQ's forking Worker, its stop not held by its pub/sub thread."""


class SimpleWorker(ChannelMixin, RQSimpleWorker):
    """RQ's SimpleWorker, its stop not held by its pub/sub thread."""
