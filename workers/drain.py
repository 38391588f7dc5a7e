"""Drain: finish the job in hand, take nothing new, exit -- asked by a signal (a pool to its workers) or
through Redis (RQ's pub/sub channel of the worker, as RQ's own `shutdown` and `stop-job` commands).

RQ offers only the warm shutdown (which refreshq's worker turns into "checkpoint and requeue the running
job") and the cold one. A drain raises nothing in the main thread: the worker's loop sees the flag before
its next dequeue, and its blocking waits last at most workers.claims.BLOCK_SECONDS.
"""

from __future__ import annotations

import os
import signal
from types import FrameType
from typing import Any

from jobs.rqseam.worker import WorkerSeam
from jobs.workforce import DRAIN_COMMAND

DRAIN_SIGNAL = signal.SIGUSR1


class DrainMixin(WorkerSeam):
    """For RQ worker classes: SIGUSR1 or the `refreshq-drain` command drains the worker."""

    draining = False

    def install_drain_handler(self) -> None:
        signal.signal(DRAIN_SIGNAL, self.request_drain)

    def request_drain(self, _signum: int, _frame: FrameType | None) -> None:
        if not self.draining:
            self.log.info("Worker %s: draining (finishing the job in hand, taking nothing new)", self.name)
        self.draining = True
        self.stop_requested = True

    def command_handled(self, payload: dict[str, Any]) -> bool:
        if payload.get("command") == DRAIN_COMMAND:
            os.kill(os.getpid(), DRAIN_SIGNAL)  # handled in the main thread, like RQ's shutdown command
            return True
        return super().command_handled(payload)
