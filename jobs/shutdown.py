"""Warm shutdown inside a work-horse: SIGTERM asks the running refresh job to checkpoint and requeue.

Platforms send SIGTERM on every deploy and allow about 30 s; a refresh can run for an hour. RQ's
forking worker would either wait for the job or kill it, so refreshq's worker forwards the signal
to its work-horse, whose handler only raises this flag; the job stops at its next safe point. A job
still running WARM_SHUTDOWN_BUDGET seconds later has its work-horse killed (workers.RefreshqWorker).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

requested = threading.Event()


def _handler(_signum: int, _frame: FrameType | None) -> None:
    requested.set()


def install_horse_handlers() -> None:
    """In a freshly forked work-horse: SIGTERM raises the flag, Ctrl+C is left to the worker."""
    requested.clear()
    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
