"""What both of refreshq's workers change in RQ's worker (BaseWorker): each RQ method overridden here calls a
hook named after what refreshq decides, in refreshq's own signature; a hook left alone keeps RQ's behaviour.
Also the accessors of RQ's private worker attributes refreshq reads or sets. The command channel's hooks are
a class of their own (ChannelSeam), which RQ's unchanged workers in the bench use too.

RQ 3 (its main branch) changes here: `handle_job_success` and `handle_job_failure` take the execution,
`get_heartbeat_ttl` a working time; the hooks stay as they are.
"""

from __future__ import annotations

import contextlib
import functools
import signal
from collections.abc import Iterator, Sequence
from typing import Any

from redis.client import PubSub
from rq import Queue
from rq.command import parse_payload
from rq.job import Job, Retry
from rq.utils import now
from rq.worker import BaseWorker


class ChannelSeam(BaseWorker):
    """RQ's worker with the subscription to its command channel as hooks (workers.channel implements them,
    for refreshq's workers and for RQ's own ones the bench compares with)."""

    def rq_command_channel_error(self, exc: Exception, pubsub: PubSub, listener: Any) -> None:
        """RQ's handling of an error on the command channel: log and wait 2 s on a lost connection, else raise."""
        super()._pubsub_exception_handler(exc, pubsub, listener)

    def listen_for_commands(self) -> None:
        """Subscribe to the worker's command channel and listen to it (RQ: on a redis-py pubsub thread)."""
        super().subscribe()  # type: ignore[no-untyped-call]

    def stop_listening_for_commands(self) -> None:
        super().unsubscribe()  # type: ignore[no-untyped-call]

    def subscribe(self) -> None:
        self.listen_for_commands()

    def unsubscribe(self) -> None:
        self.stop_listening_for_commands()


class WorkerSeam(ChannelSeam):
    """RQ's BaseWorker with refreshq's hooks; mixed in before RQ's Worker or SimpleWorker."""

    # -- RQ's private attributes, read and set only through these --------------------------------------------

    @property
    def stop_requested(self) -> bool:
        """RQ's stop flag, which its work loop looks at before each dequeue."""
        return bool(self._stop_requested)

    @stop_requested.setter
    def stop_requested(self, value: bool) -> None:
        self._stop_requested = value

    @property
    def ordered_queues(self) -> list[Queue]:
        """The queues in the order the next dequeue tries them (RQ's dequeue strategies reorder them)."""
        return self._ordered_queues

    @ordered_queues.setter
    def ordered_queues(self, queues: Sequence[Queue]) -> None:
        self._ordered_queues = list(queues)

    @property
    def stopped_job_id(self) -> str | None:
        """The job RQ's stop-job command stopped, until its failure is recorded."""
        return self._stopped_job_id

    def install_rq_signal_handlers(self) -> None:
        """RQ's SIGINT and SIGTERM handlers: a warm shutdown (request_stop), a second one cold."""
        self._install_signal_handlers()  # type: ignore[no-untyped-call]

    def begin_warm_stop(self) -> None:
        """What RQ's request_stop does before it raises StopRequested (when idle): the shutdown date, the
        force-stop handlers for a second signal, the log line and the stop flag."""
        self._shutdown_requested_date = now()
        signal.signal(signal.SIGINT, self.request_force_stop)
        signal.signal(signal.SIGTERM, self.request_force_stop)
        self.log.info("Worker %s: warm shut down requested", self.name)
        self._stop_requested = True

    # -- hooks -----------------------------------------------------------------------------------------------

    def may_clean_registries(self) -> bool:
        """Whether RQ's periodic maintenance may clean the registries now."""
        return True

    def heartbeat_ttl(self, job: Job) -> int:
        """Seconds the heartbeats written while `job` runs are good for."""
        return int(super().get_heartbeat_ttl(job))

    def queue_order_after(self, served: Queue) -> Sequence[Queue] | None:
        """The order of the queues after a job from `served`; None: RQ's dequeue strategy decides."""
        return None

    def may_record_end(self, job: Job) -> bool:
        """Whether the end of this execution of `job` (success, failure, retry) may be recorded."""
        return True

    def failure_taken_care_of(self, job: Job, queue: Queue, exc_string: str) -> bool:
        """Called before RQ records a failure of `job`; True: handled here, RQ records nothing."""
        return False

    def after_retry(self, job: Job, queue: Queue, retry: Retry) -> None:
        """Called after RQ has retried `job` (requeued or scheduled it), which returned `retry`."""

    def command_handled(self, payload: dict[str, Any]) -> bool:
        """A command on the worker's channel (RQ's shutdown, kill-horse, stop-job, or refreshq's own);
        True: handled, RQ does not see it."""
        return False

    def on_stop_signal(self) -> bool:
        """A warm shutdown was asked for (SIGTERM, SIGINT); True: RQ's handler goes on (and, when the worker
        is idle, raises StopRequested where the signal landed)."""
        return True

    # -- RQ's methods ----------------------------------------------------------------------------------------

    def clean_registries(self) -> None:
        if self.may_clean_registries():
            super().clean_registries()  # type: ignore[no-untyped-call]

    def get_heartbeat_ttl(self, job: Job) -> int:
        return self.heartbeat_ttl(job)

    def reorder_queues(self, reference_queue: Queue) -> None:
        order = self.queue_order_after(reference_queue)
        if order is None:
            super().reorder_queues(reference_queue)
        else:
            self.ordered_queues = order

    def handle_job_success(self, job: Job, queue: Queue, started_job_registry: Any) -> None:
        if self.may_record_end(job):
            super().handle_job_success(job, queue, started_job_registry)

    def handle_job_failure(self, job: Job, queue: Queue, started_job_registry: Any = None,
                           exc_string: str = "") -> None:
        if self.may_record_end(job) and not self.failure_taken_care_of(job, queue, exc_string):
            super().handle_job_failure(job, queue, started_job_registry, exc_string)

    def handle_job_retry(self, job: Job, queue: Queue, retry: Retry, started_job_registry: Any,
                         execution: Any) -> None:
        if self.may_record_end(job):
            with _requeued_at_front(queue, retry):
                super().handle_job_retry(job, queue, retry, started_job_registry, execution)
            self.after_retry(job, queue, retry)

    def handle_payload(self, message: Any) -> None:
        if not self.command_handled(parse_payload(message)):
            super().handle_payload(message)  # type: ignore[no-untyped-call]

    def request_stop(self, signum: int, frame: Any) -> None:
        if self.on_stop_signal():
            super().request_stop(signum, frame)  # type: ignore[no-untyped-call]


@contextlib.contextmanager
def _requeued_at_front(queue: Queue, retry: Retry) -> Iterator[None]:
    """RQ 2.12 enqueues a job that returned a Retry at the back whatever its `enqueue_at_front`
    (Job._handle_retry_result calls Queue._enqueue_job without it). Here the queue enqueues it at the front in
    RQ's own pipeline: a work-horse killed before a later step (the shutdown budget) cannot leave it behind."""
    if not retry.enqueue_at_front or any(retry.intervals):
        yield
        return
    original = queue._enqueue_job
    queue._enqueue_job = functools.partial(original, at_front=True)  # type: ignore[method-assign]
    try:
        yield
    finally:
        del queue._enqueue_job
