"""Global limits across workers: running tasks, upstream requests in flight and per second, pending tasks."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis

from jobs import keys, records
from jobs.config import Settings
from jobs.errors import TaskCreationError
from jobs.manager import SyncTaskManager
from jobs.upstream.serve import RunningUpstream, start_background
from tests.conftest import run_cli
from tests.helpers import wait_until, worker_process
from workers.limits import UpstreamGate

# Small provinces, so that eight tasks finish quickly.
PROVINCES = ["澳门", "香港", "台湾", "宁夏", "海南", "天津", "北京", "上海"]


@pytest.fixture
def upstream() -> Iterator[RunningUpstream]:
    with start_background(4000, latency_ms=15) as running:
        yield running


def test_never_more_than_the_limit_of_tasks_run_and_the_rest_wait_in_order(
    conn: redis.Redis, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, upstream: RunningUpstream
) -> None:
    monkeypatch.setenv("REFRESHQ_MAX_CONCURRENT_TASKS", "5")
    env = {**env, "REFRESHQ_MAX_CONCURRENT_TASKS": "5"}
    manager = SyncTaskManager(Settings.from_env(), conn, upstream={"kind": "http", "url": upstream.url})
    task_ids = [manager.create_province_refresh_task(p) for p in PROVINCES]
    running_seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            running_seen.append(int(conn.zcard(keys.tasks_with_status(records.RUNNING))))
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with worker_process(env), worker_process(env):
            wait_until(lambda: all(manager.get_task_status(t)["status"] == "SUCCEEDED" for t in task_ids),
                       120, 0.1, "all eight tasks to succeed")
    finally:
        stop.set()
        watcher.join()
    assert max(running_seen) <= 5
    assert max(running_seen) == 5  # five ran side by side while three waited
    finals = [manager.get_task_status(t) for t in task_ids]
    first_finish = min(f["finished_at"] for f in finals[:5])
    # The last three waited in order for a slot: none started before one of the first five ended.
    assert all(f["started_at"] >= first_finish for f in finals[5:])
    assert conn.zcard(keys.TASKS_WAITING) == 0


def test_upstream_in_flight_and_rate_limits_hold_across_workers(
    conn: redis.Redis, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, upstream: RunningUpstream
) -> None:
    limits = {"REFRESHQ_UPSTREAM_CONCURRENCY": "3", "REFRESHQ_UPSTREAM_RPS": "40"}
    for name, value in limits.items():
        monkeypatch.setenv(name, value)
    env = {**env, **limits}
    manager = SyncTaskManager(Settings.from_env(), conn, upstream={"kind": "http", "url": upstream.url})
    first = manager.create_province_refresh_task("宁夏")
    second = manager.create_province_refresh_task("海南")
    with worker_process(env), worker_process(env):
        for task_id in (first, second):
            wait_until(lambda t=task_id: manager.get_task_status(t)["status"] == "SUCCEEDED",  # type: ignore[misc]
                       120, 0.1, "the tasks to succeed")
    stats = upstream.stats()
    assert stats["total"] > 40  # enough requests for the limits to matter
    assert stats["max_in_flight"] <= 3
    assert stats["max_per_second"] <= 40


def test_a_lease_held_by_a_dead_worker_is_released_by_expiry(conn: redis.Redis) -> None:
    dead = UpstreamGate(conn, concurrency=1, rps=0, lease_seconds=0.5)
    holder = dead()
    holder.__enter__()  # the worker dies here: it never leaves the block
    alive = UpstreamGate(conn, concurrency=1, rps=0)
    took = threading.Event()

    def request() -> None:
        with alive():
            took.set()

    thread = threading.Thread(target=request)
    thread.start()
    assert not took.wait(0.2)  # the slot is still held
    assert took.wait(5)  # and freed when the lease expires
    thread.join()
    assert conn.zcard(keys.UPSTREAM_IN_FLIGHT) == 0


def test_a_task_beyond_the_pending_limit_is_refused_and_nothing_is_enqueued(
    conn: redis.Redis, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFRESHQ_MAX_PENDING", "2")
    manager = SyncTaskManager(Settings.from_env(), conn, upstream={"kind": "sample", "scale": 100})
    manager.create_full_refresh_task()
    manager.create_full_refresh_task()
    queued = conn.llen("rq:queue:refresh")
    with pytest.raises(TaskCreationError, match="任务队列已满"):
        manager.create_full_refresh_task()
    result = run_cli("refresh", "full", env={**env, "REFRESHQ_MAX_PENDING": "2"})
    assert result.returncode == 1
    assert "任务队列已满" in result.stderr
    assert conn.llen("rq:queue:refresh") == queued
    assert manager.list_tasks()["total"] == 2
