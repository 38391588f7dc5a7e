"""Deploys and crashes with real worker processes, timed from the upstream's side (the test server
records when each request reaches it): a SIGTERMed worker exits within its budget and its job resumes
at the front of the queue at once; a killed one within the crash-detection window; a job that does not
stop in time is cut short and requeued; named tasks do not wait for a whole refresh."""

from __future__ import annotations

import os
import re
import signal
import time

import pytest
import redis
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from jobs import keys, queues
from jobs.config import Settings
from jobs.refresh.manager import SyncTaskManager
from jobs.upstream.serve import Faults
from tests.support.helpers import (
    Requests,
    alive,
    exported,
    kill_with_horses,
    recording_upstream,
    refreshq_process,
    run_cli,
    scheduler_running,
    wait_status,
    wait_until,
    work_horses,
    worker_process,
)

pytestmark = pytest.mark.slow

SCALE = 20_000


def first_request_after(requests: Requests, moment: float, province: str, timeout: float) -> float:
    """Seconds from `moment` to the first request for a region of `province` the upstream saw after it."""
    prefix = f"/regions/{province[:2]}"

    def first() -> float | None:
        return next((t for t, path in list(requests) if t > moment and prefix in path), None)

    return float(wait_until(first, timeout, 0.02, f"a request for {province} after the restart")) - moment


def province_of(job_id: str) -> str | None:
    """The province code of a province job id (`<task>-p<code>-<attempt>`); None for a plan job."""
    match = re.search(r"-p(\d+)-\d+$", job_id)
    return match.group(1) if match else None


def busy_province(conn: redis.Redis, task_id: str) -> str | None:
    """The running province if at most half of its leaves are done (its job cannot end before a stop lands)."""
    ids = StartedJobRegistry(queues.REFRESH, connection=conn).get_job_ids()
    code = next((c for c in map(province_of, ids) if c), None)
    if code is None:
        return None
    total, done = conn.hmget(keys.task_stats(task_id), [keys.province_stat(code, keys.PROVINCE_LEAVES_TOTAL),
                                                        keys.province_stat(code, keys.PROVINCE_LEAVES_DONE)])
    return code if total and int(total) >= 2 * int(done or 0) else None


def leaves_done(conn: redis.Redis, task_id: str) -> int:
    return int(conn.hget(keys.task_stats(task_id), "leaves_done") or 0)


def test_after_a_sigterm_the_old_worker_exits_at_once_and_the_new_one_resumes_within_5_s(
    settings: Settings, conn: redis.Redis, env: dict[str, str]
) -> None:
    with recording_upstream(SCALE, latency_ms=40) as (upstream, requests):
        manager = SyncTaskManager(settings, conn, upstream={"kind": "http", "url": upstream.url})
        task_id = manager.create_full_refresh_task()
        with worker_process(env) as old:
            wait_until(lambda: leaves_done(conn, task_id) >= 100, 120, what="some leaves staged")
            province = wait_until(lambda: busy_province(conn, task_id), 120, 0.02,
                                  "a running province with half its leaves to go")
            os.kill(old.pid, signal.SIGTERM)
            sigterm = time.monotonic()
            assert old.wait(timeout=15) == 0
            exited = time.monotonic() - sigterm
            # The deploy's new worker, started once the old one is gone (started before, it may take another
            # province first: the interrupted one, back at the queue's front, then waits for a free worker).
            with worker_process(env):
                # The old worker and its work-horse are gone: what the upstream sees now is the new one.
                resumed = first_request_after(requests, sigterm + exited, province, 30) + exited
                final = wait_status(manager, task_id, ("SUCCEEDED", "FAILED"), 180)
    print(f"SIGTERM: old worker exited after {exited:.2f} s; {province} resumed {resumed:.2f} s after the SIGTERM")
    assert exited < 10
    # The interrupted province went back to the front of the queue and its slots were free.
    assert resumed < 5, f"{province} resumed {resumed:.1f} s after the SIGTERM"
    assert final["status"] == "SUCCEEDED"
    assert final["statistics"]["hospitals_found"] == SCALE


def test_after_a_kill_9_of_worker_and_horse_the_new_worker_resumes_within_25_s(
    settings: Settings, conn: redis.Redis, env: dict[str, str]
) -> None:
    with recording_upstream(SCALE, latency_ms=40) as (upstream, requests), scheduler_running(env):
        manager = SyncTaskManager(settings, conn, upstream={"kind": "http", "url": upstream.url})
        task_id = manager.create_full_refresh_task()
        with worker_process(env) as old:
            wait_until(lambda: leaves_done(conn, task_id) >= 100, 120, what="some leaves staged")
            # One with leaves to go: a job killed with all its leaves staged asks the upstream nothing more.
            province = wait_until(lambda: busy_province(conn, task_id), 120, 0.02,
                                  "a running province with half its leaves to go")
            kill_with_horses(old)
            killed = time.monotonic()
        with worker_process(env):
            resumed = first_request_after(requests, killed, province, 60)
            final = wait_status(manager, task_id, ("SUCCEEDED", "FAILED"), 180)
    print(f"kill -9: {province} resumed {resumed:.2f} s after the kill")
    assert resumed < 25, f"{province} resumed {resumed:.1f} s after the kill"
    assert final["status"] == "SUCCEEDED"
    assert final["statistics"]["hospitals_found"] == SCALE


def test_a_busy_full_refresh_resumes_a_killed_province_job_within_25_s(
    conn: redis.Redis, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFRESHQ_UPSTREAM_CONCURRENCY", "2")  # slow enough that provinces stay queued
    env = {**env, "REFRESHQ_UPSTREAM_CONCURRENCY": "2"}
    with recording_upstream(SCALE, latency_ms=20) as (upstream, requests), scheduler_running(env):
        manager = SyncTaskManager(Settings.from_env(), conn, upstream={"kind": "http", "url": upstream.url})
        task_id = manager.create_full_refresh_task()
        with worker_process(env) as victim, worker_process(env):
            wait_until(lambda: leaves_done(conn, task_id) >= 100, 120, what="some leaves staged")
            province = wait_until(lambda: _job_of(conn, victim.pid), 10, 0.02, "the victim's province job")
            kill_with_horses(victim)
            killed = time.monotonic()
            with worker_process(env):  # its replacement
                resumed = first_request_after(requests, killed, province, 60)
                final = wait_status(manager, task_id, ("SUCCEEDED", "FAILED"), 240)
    first_seen: dict[str, float] = {}
    for moment, path in requests:
        if "/hospitals" in path:
            first_seen.setdefault(path.split("/regions/")[1][:2], moment)
    jumped = [code for code, moment in first_seen.items() if moment > killed + resumed]
    print(f"busy refresh: {province} resumed {resumed:.2f} s after the kill, ahead of {len(jumped)} provinces")
    assert resumed < 25, f"{province} resumed {resumed:.1f} s after the kill"
    assert jumped, "no province was still queued when the killed one resumed: not a busy refresh"
    assert final["status"] == "SUCCEEDED"
    assert final["statistics"]["hospitals_found"] == SCALE


def _job_of(conn: redis.Redis, worker_pid: int) -> str | None:
    """The province of the job the worker with this pid runs (RQ's worker hash names it)."""
    for key in conn.scan_iter("rq:worker:*"):
        pid, job_id = conn.hmget(key, "pid", "current_job")
        if pid is not None and int(pid) == worker_pid and job_id:
            return province_of(job_id.decode())
    return None


def test_a_job_that_does_not_stop_is_cut_short_within_the_budget_and_requeued_at_the_front(
    settings: Settings, conn: redis.Redis, env: dict[str, str]
) -> None:
    env = {**env, "REFRESHQ_UPSTREAM_TIMEOUT": "60"}
    with recording_upstream(SCALE, latency_ms=0) as (upstream, requests):
        manager = SyncTaskManager(settings, conn, upstream={"kind": "http", "url": upstream.url})
        task_id = manager.create_full_refresh_task()  # creation asks for the provinces: answered
        upstream.server.faults = Faults(hang_rate=1.0, hang_seconds=60)  # its plan job's province listing hangs
        requests.clear()
        queues.queue(conn, queues.REFRESH).enqueue("tests.support.job_functions.add", 1, 2)  # queued behind it
        with worker_process(env) as worker:
            wait_until(lambda: upstream.stats()["in_flight"] >= 1, 30, what="the plan job's request to hang")
            os.kill(worker.pid, signal.SIGTERM)
            sigterm = time.monotonic()
            assert worker.wait(timeout=15) == 0
            exited = time.monotonic() - sigterm
    print(f"budget: a worker whose job would not stop exited {exited:.2f} s after the SIGTERM")
    assert exited < 10
    plan = Job.fetch(f"{task_id}-plan", connection=conn, serializer=JSONSerializer)
    assert plan.get_status() == JobStatus.QUEUED  # requeued, not failed: nothing was lost
    assert queues.queue(conn, queues.REFRESH).job_ids[0] == plan.id  # at the front
    assert conn.zcard(keys.UPSTREAM_HOLDERS) == 0  # the worker gave the killed horse's slots back
    assert manager.get_task_status(task_id)["status"] == "RUNNING"  # admitted; resumes with its plan job
    assert len(requests) == 1


def test_with_one_worker_a_named_task_runs_while_a_full_refresh_does(
    settings: Settings, conn: redis.Redis, env: dict[str, str]
) -> None:
    env = {**env, "REFRESHQ_UPSTREAM_CONCURRENCY": "4"}  # a refresh of half a minute or so
    with recording_upstream(SCALE, latency_ms=40) as (upstream, _requests):
        manager = SyncTaskManager(settings, conn, upstream={"kind": "http", "url": upstream.url})
        task_id = manager.create_full_refresh_task()
        with refreshq_process(["worker"], env):  # as the Procfile runs it: every queue
            wait_until(lambda: leaves_done(conn, task_id) >= 20, 120, what="the refresh to be under way")
            started = time.monotonic()
            result = run_cli("tasks", "run", "data-snapshot", "--wait", "--timeout", "60", env=env)
            took = time.monotonic() - started
            status = manager.get_task_status(task_id)["status"]
    print(f"named task: done {took:.2f} s after it was enqueued, while the refresh was {status}")
    assert result.returncode == 0, result.stderr
    assert status == "RUNNING"  # it did not wait for the refresh
    assert took < 30


def test_a_kill_9_of_the_worker_alone_takes_its_horse_with_it(
    settings: Settings, conn: redis.Redis, env: dict[str, str]
) -> None:
    """RQ gives a work-horse its own process group; without the kernel's parent-death signal a horse
    whose worker is SIGKILLed runs on, unseen, while its job is resumed elsewhere: two copies at once."""
    env = {**env, "REFRESHQ_UPSTREAM_CONCURRENCY": "2"}  # a province job that lasts for seconds
    with recording_upstream(SCALE, latency_ms=50) as (upstream, _requests), scheduler_running(env):
        manager = SyncTaskManager(settings, conn, upstream={"kind": "http", "url": upstream.url})
        task_id = manager.create_province_refresh_task("广东")
        with worker_process(env) as old:
            wait_until(lambda: leaves_done(conn, task_id) >= 5, 120, what="some leaves staged")
            horses = wait_until(lambda: work_horses(old.pid), 30, what="a work-horse")
            os.kill(old.pid, signal.SIGKILL)  # the worker only: not its process group, not its horse
            old.wait(timeout=10)
            killed = time.monotonic()
            wait_until(lambda: not any(alive(pid) for pid in horses), 2, 0.02,
                       "the orphaned work-horse to die with its worker")
            gone = time.monotonic() - killed
        with worker_process(env):
            final = wait_status(manager, task_id, ("SUCCEEDED", "FAILED"), 180)
    print(f"kill -9 of the worker alone: its horse was gone {gone:.2f} s later")
    assert final["status"] == "SUCCEEDED"
    assert final["statistics"]["hospitals_found"] == len(exported(conn, "440000")) > 0

