"""Helpers shared by the refresh tests: workers as real processes, waiting on task states."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import redis

from jobs import queues
from jobs.manager import SyncTaskManager
from tests.conftest import REFRESHQ, REPO
from workers import build_worker


def drain(conn: redis.Redis, names: Iterable[str] = (queues.REFRESH,)) -> None:
    """Run a forking worker in this process until the queues are empty."""
    build_worker(conn, list(names)).work(burst=True, logging_level="WARNING")


@contextmanager
def worker_process(env: dict[str, str], *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    """A `refreshq worker` process on the refresh queue, killed at the end."""
    proc = subprocess.Popen(
        [REFRESHQ, "worker", "--queue", "refresh", *extra], env={**env, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def wait_until(predicate: Callable[[], Any], timeout: float = 60, interval: float = 0.05, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)


def wait_status(
    manager: SyncTaskManager, task_id: str, statuses: Iterable[str], timeout: float = 120
) -> dict[str, Any]:
    wanted = set(statuses)
    return wait_until(  # type: ignore[no-any-return]
        lambda: (s := manager.get_task_status(task_id))["status"] in wanted and s, timeout, 0.05,
        f"task {task_id} to reach {wanted}",
    )


def checksum(records: Iterable[dict[str, Any]]) -> tuple[int, str]:
    """(count, digest) of records independent of order: equal data gives equal results."""
    lines = sorted(json.dumps(r, ensure_ascii=False, sort_keys=True) for r in records)
    return len(lines), hashlib.sha256("\n".join(lines).encode()).hexdigest()


def horse_pids(worker_pid: int) -> list[int]:
    """Children (work-horses) of a worker process."""
    try:
        with open(f"/proc/{worker_pid}/task/{worker_pid}/children") as f:
            children = f.read().split()
    except OSError:
        return []
    return [int(c) for c in children]
