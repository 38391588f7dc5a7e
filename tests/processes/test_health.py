"""`refreshq health`: each rule's issue when provoked, `ok` when nothing is wrong, the exit codes."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from bench.observe_seed import FakeRun, fake_run
from jobs import keys, queues
from jobs.config import Settings
from jobs.duties.retries import RetryPolicy, sweep_failed_jobs
from jobs.observe import report
from jobs.refresh.manager import SyncTaskManager
from jobs.statuses import FAILED, RUNNING, SUCCEEDED
from jobs.upstream.serve import Faults, start_background
from scheduler import Scheduler
from tests.support.helpers import drain, run_cli, wait_until, worker_process


@pytest.fixture
def scheduler_alive(conn: redis.Redis) -> Iterator[None]:
    """An active scheduler with no duties, in-process, beating every tick for the whole test: a single beat
    went stale (no_scheduler, critical) in a test that took over SCHEDULER_STALE_SECONDS on a busy machine."""
    scheduler = Scheduler(conn, duties=[], tick=0.5)
    scheduler.run_once()  # active and beating before the test starts
    thread = threading.Thread(target=scheduler.run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        scheduler.stop()
        thread.join(10)


def _health(env: dict[str, str], **extra: str) -> tuple[int, dict[str, Any]]:
    result = run_cli("health", "--json", env={**env, **extra})
    assert result.returncode in (0, 1, 3), result.stderr
    return result.returncode, json.loads(result.stdout)


def _rules(data: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(i["rule"], i["subject"]): i for i in data["issues"]}


def test_ok_when_nothing_is_wrong(conn: redis.Redis, env: dict[str, str], scheduler_alive: None) -> None:
    now = time.time()
    fake_run(conn, FakeRun("t_ok", "full", now - 300, now - 290, now - 10, SUCCEEDED, hospitals=100))
    code, data = _health(env)
    assert (code, data["status"], data["issues"]) == (0, "ok", [])
    assert data["metrics"]["tasks"]["succeeded"] == 1 and data["timestamp"]
    text = run_cli("health", env=env)
    assert text.returncode == 0 and text.stdout.startswith("health: ok")


def test_no_scheduler_is_critical(conn: redis.Redis, env: dict[str, str]) -> None:
    code, data = _health(env)
    assert code == 3 and data["status"] == "critical"
    assert ("no_scheduler", "scheduler") in _rules(data)


def test_a_job_queued_with_no_worker_and_an_old_queue_head(
    conn: redis.Redis, env: dict[str, str], scheduler_alive: None
) -> None:
    manager = SyncTaskManager(Settings.from_env(env), conn)
    manager.create_full_refresh_task()  # its plan job waits on the refresh queue; no worker runs
    wait_until(lambda: conn.lindex("rq:queue:refresh", 0), 5)
    time.sleep(1.1)  # the age the backlog rule is about
    code, data = _health(env, REFRESHQ_HEALTH_QUEUE_AGE="1")
    found = _rules(data)
    assert code == 3 and data["status"] == "critical"
    assert found[("no_worker", "refresh")]["severity"] == "critical" and found[("no_worker", "refresh")]["value"] == 1
    backlog = found[("queue_backlog", "refresh")]
    assert backlog["severity"] == "warning" and backlog["value"] >= 1 and backlog["threshold"] == 1
    with worker_process(env):  # a live worker for the queue: no longer "no worker"
        wait_until(lambda: ("no_worker", "refresh") not in _rules(_health(env)[1]), 30, 0.5)


def test_a_stalled_and_long_running_task(conn: redis.Redis, env: dict[str, str], scheduler_alive: None) -> None:
    """A refresh whose upstream hangs: RUNNING, its progress stuck at 0, running past short thresholds."""
    with start_background(500) as hanging:
        http_env = {**env, "REFRESHQ_UPSTREAM_URL": hanging.url, "REFRESHQ_UPSTREAM_TIMEOUT": "60"}
        manager = SyncTaskManager(Settings.from_env(http_env), conn)
        task_id = manager.create_full_refresh_task()  # creation asks for the provinces: answered
        hanging.server.faults = Faults(hang_rate=1.0, hang_seconds=60)  # from now on, every request hangs
        with worker_process(http_env):
            wait_until(lambda: manager.get_task_status(task_id)["status"] == RUNNING, 30)
            limits = {"REFRESHQ_STALL_SECONDS": "2", "REFRESHQ_HEALTH_RUN_WARNING": "1",
                      "REFRESHQ_HEALTH_RUN_CRITICAL": "4"}
            code, data = wait_until(lambda: (r := _health(http_env, **limits)) and
                                    ("stalled", task_id) in _rules(r[1]) and r, 30, 0.5)
            found = _rules(data)
            assert found[("stalled", task_id)]["value"] >= 2 and found[("stalled", task_id)]["threshold"] == 2
            assert found[("long_running", task_id)]["severity"] in ("warning", "critical")
            code, data = wait_until(lambda: (r := _health(http_env, **limits)) and
                                    _rules(r[1])[("long_running", task_id)]["severity"] == "critical" and r, 30, 0.5)
            assert code == 3 and _rules(data)[("long_running", task_id)]["threshold"] == 4
            calm = _health(http_env)[1]  # the default thresholds: an hour, ten minutes
            assert not {rule for rule, _ in _rules(calm)} & {"stalled", "long_running"}


def test_success_rate_too_many_running_and_dead_letters(
    conn: redis.Redis, env: dict[str, str], scheduler_alive: None
) -> None:
    now = time.time()
    fake_run(conn, FakeRun("t_ok", "full", now - 300, now - 290, now - 10, SUCCEEDED))
    fake_run(conn, FakeRun("t_bad", "province", now - 300, now - 290, now - 10, FAILED))
    for i in range(2):
        fake_run(conn, FakeRun(f"t_run_{i}", "full", now - 30, now - 20, progress=10))
    job = queues.queue(conn, queues.NORMAL).enqueue("tests.support.job_functions.broken")
    drain(conn, [queues.NORMAL])
    sweep_failed_jobs(conn, RetryPolicy(max_retries=0), Settings.from_env())  # a permanent failure: buried at once
    assert conn.zscore(keys.DEAD_LETTER, job.id) is not None
    code, data = _health(env, REFRESHQ_HEALTH_MAX_RUNNING="1")
    found = _rules(data)
    assert code == 1 and data["status"] == "warning"
    assert found[("success_rate", "24h")]["value"] == 50.0 and found[("success_rate", "24h")]["threshold"] == 90
    assert found[("too_many_running", "tasks")]["value"] == 2
    assert found[("dead_letters", "dead-letter")]["value"] == 1
    assert _health(env, REFRESHQ_HEALTH_MIN_SUCCESS_RATE="50", REFRESHQ_HEALTH_MAX_RUNNING="2")[1]["issues"] == [
        found[("dead_letters", "dead-letter")]
    ]


def test_redis_memory_near_maxmemory(conn: redis.Redis, settings: Settings, scheduler_alive: None) -> None:
    used = int(conn.info("memory")["used_memory"])
    old = conn.config_get("maxmemory")["maxmemory"]
    conn.config_set("maxmemory", int(used / 0.95))
    try:
        data = report.health_report(conn, settings)
    finally:
        conn.config_set("maxmemory", old)
    issue = _rules(data)[("redis_memory", "redis")]
    assert issue["severity"] == "warning" and 90 <= issue["value"] <= 100
    assert ("redis_memory", "redis") not in _rules(report.health_report(conn, settings))


def test_an_unreachable_redis_is_critical_and_bad_input_exits_2(env: dict[str, str], tmp_path: Any) -> None:
    gone = {**env, "REDIS_URL": f"unix://{tmp_path}/no-such.sock"}
    result = run_cli("health", "--json", env=gone)
    assert result.returncode == 3, result.stderr
    data = json.loads(result.stdout)
    assert data["status"] == "critical" and data["issues"][0]["rule"] == "redis_unreachable"
    assert run_cli("health", "--bogus", env=env).returncode == 2
