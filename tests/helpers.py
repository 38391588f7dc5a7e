"""Helpers shared by the refresh tests: workers as real processes, waiting on task states."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import subprocess
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import redis

from jobs import queues
from jobs.duties.retries import RetryPolicy, sweep_failed_jobs
from jobs.refresh import published as store
from jobs.refresh.manager import SyncTaskManager
from jobs.refresh.records import TERMINAL
from jobs.upstream.base import Region
from jobs.upstream.sample import SampleDirectory
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
            horses = horse_pids(proc.pid)  # each in a process group of its own (RQ's setpgrp)
            os.killpg(proc.pid, signal.SIGKILL)
            for pid in horses:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)  # else it runs on into the next test's database
        proc.wait(timeout=10)


@contextmanager
def scheduler_running(env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """A `refreshq scheduler` process (cleans the started registries, retries, admits), stopped at the end."""
    proc = subprocess.Popen([REFRESHQ, "scheduler"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
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


def settle(conn: redis.Redis, manager: SyncTaskManager, task_id: str, timeout: float = 60) -> dict[str, Any]:
    """Drain the refresh queue in this process, and let the retry sweeper requeue (or bury) failed jobs,
    until the task ends: what workers and the scheduler do together, without their start-up time."""
    policy = RetryPolicy.from_settings(manager.settings)
    deadline = time.monotonic() + timeout
    while True:
        drain(conn)
        status = manager.get_task_status(task_id)
        if status["status"] in TERMINAL:
            return status
        wait_until(
            lambda: sweep_failed_jobs(conn, policy) or manager.get_task_status(task_id)["status"] in TERMINAL,
            max(0.1, deadline - time.monotonic()), 0.02, f"a retry of task {task_id} to fall due",
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


def exported(conn: redis.Redis, province: str | None = None) -> list[dict[str, Any]]:
    """The published records (of one province, or all) as `refreshq data export --format jsonl` writes them."""
    out = io.StringIO()
    store.export(conn, out, "jsonl", [province] if province else None)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def province_hospitals(directory: SampleDirectory, prefix: str) -> list[dict[str, Any]]:
    """The hospitals of the sample whose region code starts with `prefix` (e.g. "11" for 北京)."""
    return [h for h in directory.all_hospitals() if str(h["region_code"]).startswith(prefix)]


class RefusingDirectory(SampleDirectory):
    """The sample directory with some regions gone: served over HTTP, they answer 404."""

    def __init__(self, scale: int, refused: Iterable[str]) -> None:
        super().__init__(scale)
        self.refused = frozenset(refused)

    def find_region(self, code: str) -> Region | None:
        return None if code in self.refused else super().find_region(code)


def _inflated(value: bytes) -> bytes:
    try:
        return zlib.decompress(value)
    except zlib.error:
        return b""


def redis_keys_holding(conn: redis.Redis, needle: str) -> list[str]:
    """Every key whose name or any value (zlib-compressed ones, such as RQ's job data, inflated) holds `needle`."""
    wanted = needle.encode()
    found: list[str] = []
    for key in conn.scan_iter(count=1000):
        kind = conn.type(key)
        values: list[Any]
        if kind == b"string":
            values = [conn.get(key) or b""]
        elif kind == b"hash":
            values = [part for pair in conn.hgetall(key).items() for part in pair]
        elif kind == b"list":
            values = list(conn.lrange(key, 0, -1))
        elif kind == b"set":
            values = list(conn.smembers(key))
        elif kind == b"zset":
            values = list(conn.zrange(key, 0, -1))
        elif kind == b"stream":
            entries = conn.xrange(key) or []
            values = [part for _id, fields in entries for pair in (fields or {}).items() for part in pair]
        elif kind == b"none":
            continue  # expired since the scan
        else:
            raise AssertionError(f"key {key!r} has a type this scan cannot read: {kind!r}")
        if any(wanted in value or wanted in _inflated(value) for value in [key, *values]):
            found.append(key.decode(errors="replace"))
    return found
