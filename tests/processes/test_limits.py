"""Global limits across workers: running tasks (on every way into RUNNING), upstream requests in flight and
per second as the upstream sees them, pending tasks."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis

from jobs import keys
from jobs.config import Settings
from jobs.errors import TaskCreationError
from jobs.refresh import records
from jobs.refresh.manager import SyncTaskManager
from jobs.upstream.sample import SampleDirectory
from jobs.upstream.serve import RunningUpstream, start_background
from tests.support.faulty_upstream import FaultyProxy
from tests.support.helpers import (
    province_hospitals,
    run_cli,
    scheduler_running,
    wait_status,
    wait_until,
    worker_process,
)

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


@pytest.mark.parametrize(("concurrency", "rps"), [(3, 40), (4, 0)])
@pytest.mark.slow
def test_upstream_in_flight_and_rate_limits_hold_across_workers(
    conn: redis.Redis, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, upstream: RunningUpstream,
    concurrency: int, rps: int,
) -> None:
    limits = {"REFRESHQ_UPSTREAM_CONCURRENCY": str(concurrency), "REFRESHQ_UPSTREAM_RPS": str(rps)}
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
    stats = upstream.stats()  # seen by the upstream, not by the clients
    assert stats["total"] > 40  # enough requests for the limits to matter
    assert stats["max_in_flight"] <= concurrency
    if rps:
        assert stats["max_per_second"] <= rps
        assert stats["max_per_second"] >= rps * 0.75  # the cap was what held them back
    else:
        assert stats["max_in_flight"] == concurrency  # both jobs' shares were in use at once
    assert conn.zcard(keys.UPSTREAM_HOLDERS) == 0  # every job gave its slots back


def test_a_cancelled_refresh_gives_its_upstream_slots_back_at_once(
    conn: redis.Redis, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFRESHQ_UPSTREAM_CONCURRENCY", "4")
    env = {**env, "REFRESHQ_UPSTREAM_CONCURRENCY": "4"}
    with start_background(20_000, latency_ms=40) as slow:
        manager = SyncTaskManager(Settings.from_env(), conn, upstream={"kind": "http", "url": slow.url})
        task_id = manager.create_full_refresh_task()
        with worker_process(env):
            wait_until(lambda: int(conn.hget(keys.task_stats(task_id), "leaves_done") or 0) >= 20, 60,
                       what="the refresh to be under way")
            assert conn.zcard(keys.UPSTREAM_HOLDERS) == 1
            manager.cancel_task(task_id)
            wait_status(manager, task_id, ("CANCELLED",), 10)
            # Given back when the job ended, not when its lease would have lapsed (10 s).
            wait_until(lambda: conn.zcard(keys.UPSTREAM_HOLDERS) == 0, 2, 0.02, "the slots to be given back")
            assert not conn.exists(keys.UPSTREAM_SLOTS)


class RunningWatch:
    """Samples the number of RUNNING tasks and one task's current step every few milliseconds."""

    def __init__(self, conn: redis.Redis, task_id: str) -> None:
        self.conn, self.task_id = conn, task_id
        self.running: list[int] = []
        self.steps: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with self.conn.pipeline(transaction=False) as pipe:
                pipe.zcard(keys.tasks_with_status(records.RUNNING))
                pipe.hget(keys.task(self.task_id), "current_step")
                count, step = pipe.execute()
            self.running.append(int(count))
            self.steps.append((step or b"").decode())
            time.sleep(0.002)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.slow
def test_a_retried_task_is_admitted_within_the_running_task_limit(
    conn: redis.Redis, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    limits = {"REFRESHQ_MAX_CONCURRENT_TASKS": "1", "REFRESHQ_UPSTREAM_ATTEMPTS": "1",
              "REFRESHQ_RETRY_BASE": "0.5", "REFRESHQ_UPSTREAM_CONCURRENCY": "2"}
    for name, value in limits.items():
        monkeypatch.setenv(name, value)
    env = {**env, **limits}
    with start_background(20_000, latency_ms=30) as backend:
        proxy = FaultyProxy(backend.url)
        proxy.failing = {"640000"}  # 宁夏's first attempt fails, so it waits for a retry
        manager = SyncTaskManager(Settings.from_env(), conn, upstream={"kind": "http", "url": proxy.url})
        retried = manager.create_province_refresh_task("宁夏")
        other = manager.create_province_refresh_task("四川")  # waits for 宁夏's slot, then takes it
        watch = RunningWatch(conn, retried)
        try:
            with worker_process(env), worker_process(env), scheduler_running(env):
                wait_until(lambda: manager.get_task_status(retried)["retry"] is not None, 60, 0.02,
                           "the first attempt to fail")
                proxy.failing = set()
                finals = [wait_status(manager, t, ("SUCCEEDED", "FAILED"), 120) for t in (retried, other)]
        finally:
            watch.stop()
            proxy.close()
    assert [f["status"] for f in finals] == ["SUCCEEDED", "SUCCEEDED"], finals
    assert max(watch.running) <= 1, "two tasks were RUNNING at once"
    assert max(watch.running) == 1
    # The retry found 四川 running and waited in line (before, it went straight to RUNNING).
    assert any(step.startswith("排队等待执行") for step in watch.steps), set(watch.steps)
    assert records.load_raw(conn, retried)["attempt_started_at"] >= finals[1]["finished_at"]
    assert finals[0]["statistics"]["hospitals_found"] == len(province_hospitals(SampleDirectory(20_000), "64"))


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
    assert result.returncode == 3  # unavailable for now, as the API's 503
    assert "任务队列已满" in result.stderr
    assert conn.llen("rq:queue:refresh") == queued
    assert manager.list_tasks()["total"] == 2
