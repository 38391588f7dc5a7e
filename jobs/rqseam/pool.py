"""What refreshq's pool (workers.pool.RefreshqPool) changes in RQ's WorkerPool: each RQ method overridden here
calls a hook in refreshq's own signature. RQ's worker table (`worker_dict`, WorkerData), `handle_dead_worker`,
`status` and `request_stop` (stopping every worker) are used as they are.
"""

from __future__ import annotations

from typing import Any

import redis
from rq.serializers import JSONSerializer
from rq.worker_pool import WorkerPool


class PoolSeam(WorkerPool):
    """RQ's WorkerPool with refreshq's hooks: its own loop, start of a worker, reaping and sizing."""

    def __init__(self, conn: redis.Redis, queues: tuple[str, ...], processes: int) -> None:
        super().__init__(queues, connection=conn, num_workers=processes, serializer=JSONSerializer)

    def install_rq_signal_handlers(self) -> None:
        """RQ's SIGINT and SIGTERM handlers of the pool (request_stop)."""
        self._install_signal_handlers()  # type: ignore[no-untyped-call]

    # -- hooks -----------------------------------------------------------------------------------------------

    def run(self, burst: bool) -> None:
        """The pool's loop, until it ends (stopped, drained, or a burst done)."""
        raise NotImplementedError

    def spawn_worker(self) -> None:
        """Start one worker process and add it to `worker_dict`."""
        raise NotImplementedError

    def reap(self) -> None:
        """Take the exited workers out of `worker_dict` (through RQ's handle_dead_worker)."""
        raise NotImplementedError

    def converge(self, respawn: bool) -> None:
        """Reap, then (with `respawn`) start or drain workers to reach the wanted size."""
        raise NotImplementedError

    def on_stop_request(self) -> bool:
        """A stop was asked for (a signal, a command); True: RQ's request_stop stops every worker."""
        return True

    # -- RQ's methods ----------------------------------------------------------------------------------------

    def start(self, burst: bool = False, logging_level: str = "INFO") -> None:
        self.run(burst)

    def start_worker(self, count: int | None = None, burst: bool = True, _sleep: float = 0,
                     logging_level: str = "INFO") -> None:
        self.spawn_worker()

    def reap_workers(self) -> None:
        self.reap()

    def check_workers(self, respawn: bool = True) -> None:
        self.converge(respawn)

    def request_stop(self, signum: Any = None, frame: Any = None) -> None:
        if self.on_stop_request():
            super().request_stop(signum, frame)  # type: ignore[no-untyped-call]
