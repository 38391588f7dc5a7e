"""Stop requests: a warm shutdown inside a work-horse, and a stop of a long-running process.

Platforms send SIGTERM on every deploy and allow about 30 s; a refresh can run for an hour. RQ's
forking worker would either wait for the job or kill it, so refreshq's worker forwards the signal
to its work-horse, whose handler only raises this flag; the job stops at its next safe point. A job
still running WARM_SHUTDOWN_BUDGET seconds later has its work-horse killed (workers.RefreshqWorker).

In a worker, scheduler or web process the same flag means "this process is stopping": its Redis
client then stops waiting for a lost server (jobs/reconnect.py), so a stop is never held up by an
outage. Handlers only set the flag; nothing in a main thread waits on it (Event.wait), since a
signal arriving while that thread holds the event's lock would deadlock the handler.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import signal
import threading
from types import FrameType
from typing import Any

requested = threading.Event()


def _handler(_signum: int, _frame: FrameType | None) -> None:
    requested.set()


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def install_horse_handlers() -> None:
    """In a freshly forked work-horse: SIGTERM raises the flag, Ctrl+C is left to the worker, and the
    horse dies with its worker."""
    requested.clear()
    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Have the kernel send `sig` (SIGKILL) to this process when the process that forked it dies (Linux).

    RQ puts a work-horse in a process group of its own, so a kill -9 of the worker alone leaves the
    horse running; its heartbeat is the worker's, so the job would be declared abandoned and run a
    second time elsewhere while the orphan still runs it. Elsewhere than Linux this does nothing.
    """
    parent = os.getppid()
    prctl = libc_prctl()
    if prctl is None:
        return
    try:
        if prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the worker died between the fork and the prctl
        os._exit(1)


@functools.cache
def libc_prctl() -> Any:
    """libc's prctl, or None. Looked up once per process, and by a worker before it forks: finding libc
    runs `ldconfig -p` (a fork and an exec, about 1.6 ms), which each work-horse would pay again."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def install_stop_handlers() -> None:
    """While a long-running process starts (before its own handlers are in place): SIGTERM and
    SIGINT raise the flag, so a stop during start-up is a clean exit instead of a kill."""
    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)
