from __future__ import annotations

import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from rq.executions import Execution
from rq.job import JobStatus
from rq.registry import StartedJobRegistry

from jobs import keys, queues
from jobs.lock import OwnedLock
from scheduler import Scheduler
from tests.support.helpers import log_lines, scheduler_running, wait_until


def test_owned_lock_only_its_owner_renews_or_releases(conn: redis.Redis) -> None:
    a = OwnedLock(conn, "lock", 5_000)
    b = OwnedLock(conn, "lock", 5_000)
    assert a.acquire()
    assert not b.acquire()
    assert not b.release()
    assert a.holder() == a.token
    assert a.renew()
    assert a.release()
    assert b.acquire()
    assert b.holder() == b.token


def test_owned_lock_expires_when_not_renewed(conn: redis.Redis) -> None:
    a = OwnedLock(conn, "lock", 100)
    b = OwnedLock(conn, "lock", 5_000)
    assert a.acquire()
    wait_until(lambda: not conn.exists("lock"), 5, 0.01, "the lock to lapse")
    assert b.acquire()
    assert not a.renew()


def test_only_one_scheduler_is_active(conn: redis.Redis) -> None:
    calls: list[str] = []
    first = Scheduler(conn, duties=[lambda c: calls.append("first")])
    second = Scheduler(conn, duties=[lambda c: calls.append("second")])
    for _ in range(3):
        first.run_once()
        second.run_once()
    assert calls == ["first"] * 3
    assert first.active and not second.active


def test_scheduler_cleans_abandoned_jobs_out_of_the_started_registry(conn: redis.Redis) -> None:
    q = queues.queue(conn, queues.NORMAL)
    job = q.enqueue("tests.support.job_functions.add", 1, 2)
    job.set_status(JobStatus.STARTED)
    registry = StartedJobRegistry(queue=q)
    with conn.pipeline() as pipe:
        execution = Execution.create(job, ttl=1, pipeline=pipe)
        pipe.execute()
    conn.zadd(registry.key, {f"{job.id}:{execution.id}": (datetime.now(UTC) - timedelta(seconds=5)).timestamp()})
    assert job.id in registry.get_job_ids(cleanup=False)
    Scheduler(conn).run_once()
    assert job.id not in registry.get_job_ids(cleanup=False)
    assert job.id in q.failed_job_registry.get_job_ids()


@pytest.mark.slow
def test_two_scheduler_processes_hand_over_on_sigterm(conn: redis.Redis, env: dict[str, str], tmp_path: Path) -> None:
    log = tmp_path / "second.log"
    with scheduler_running(env) as first:
        holder = wait_until(lambda: conn.get(keys.SCHEDULER_LOCK), 20, what="the first scheduler to take the lock")
        with scheduler_running(env, log) as second:
            wait_until(lambda: log_lines(log, "standing by"), 30, what="the second scheduler to stand by")
            assert conn.get(keys.SCHEDULER_LOCK) == holder  # it tried, and left the lock to its holder
            first.send_signal(signal.SIGTERM)
            assert first.wait(timeout=20) == 0
            new_holder = wait_until(lambda: (value := conn.get(keys.SCHEDULER_LOCK)) != holder and value, 20,
                                    what="the standby to take the lock")
            assert new_holder != holder
            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=20) == 0
    assert conn.get(keys.SCHEDULER_LOCK) is None  # released on a clean stop
