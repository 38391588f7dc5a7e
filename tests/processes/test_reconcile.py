"""The reconciler (jobs.duties.reconcile), with real worker and scheduler processes: work whose job vanished is
taken up again once, within 30 s, and says so; work that merely waits, or is busy, is never touched."""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import pytest
import redis
from rq.job import Job

from jobs import keys, queues
from jobs.config import Settings
from jobs.duties import fire_schedules
from jobs.duties.lost_runs import VANISHED
from jobs.named import history, runs, schedules
from jobs.observe import counters
from jobs.redis_values import as_text, as_texts
from jobs.refresh.manager import SyncTaskManager
from jobs.upstream.sample import SampleDirectory
from jobs.upstream.serve import RunningUpstream
from tests.support.helpers import (
    checksum,
    exported,
    kill_with_horses,
    log_lines,
    refreshq_process,
    scheduler_running,
    wait_status,
    wait_until,
    work_horses,
    worker_process,
)
from tests.support.named_helpers import registry

SCALE = 6_000
pytestmark = [pytest.mark.slow, pytest.mark.upstream(scale=SCALE, latency_ms=20)]
# The reconciler takes a loss up within RECONCILE_SECONDS + CONFIRM_SECONDS + a pass (about 10 s).
TAKEN_UP_WITHIN = 30


def _reconciled(conn: redis.Redis) -> dict[str, int]:
    """The reconciler's counter, by kind."""
    return {k[1]: int(v) for k, v in counters.read_counters(conn).items() if k[0] == counters.RECONCILED}


def _queued_provinces(conn: redis.Redis, task_id: str) -> list[str]:
    return [j for j in queues.queue(conn, queues.REFRESH).job_ids if j.startswith(f"{task_id}-p")]


def _exact(conn: redis.Redis, final: dict[str, Any]) -> None:
    assert final["status"] == "SUCCEEDED", final
    assert final["statistics"]["hospitals_found"] == SCALE
    assert checksum(exported(conn)) == checksum(SampleDirectory(SCALE).all_hospitals())


@pytest.fixture
def slow_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Few requests in flight: a full refresh with one worker keeps provinces queued for a while."""
    monkeypatch.setenv("REFRESHQ_UPSTREAM_CONCURRENCY", "4")
    return {**env, "REFRESHQ_UPSTREAM_CONCURRENCY": "4"}


def test_province_jobs_deleted_from_the_queue_mid_refresh_are_enqueued_again_and_the_refresh_ends_exact(
    conn: redis.Redis, slow_env: dict[str, str], slow_upstream: RunningUpstream
) -> None:
    manager = SyncTaskManager(Settings.from_env(slow_env), conn, upstream={"kind": "http", "url": slow_upstream.url})
    task_id = manager.create_full_refresh_task()
    with scheduler_running(slow_env), worker_process(slow_env):
        queued = wait_until(lambda: (ids := _queued_provinces(conn, task_id))[2:] and ids, 120, 0.02,
                            "province jobs queued behind the running one")
        deleted, taken_out = queued[-1], queued[-2]
        Job.fetch(deleted, connection=conn).delete()  # rq-dashboard's Delete
        conn.lrem(queues.queue(conn, queues.REFRESH).key, 1, taken_out)  # out of its queue, its hash kept
        lost_at = time.monotonic()
        events = wait_until(lambda: len(e := manager.get_task_status(task_id)["recovered"]) >= 2 and e,
                            TAKEN_UP_WITHIN, 0.1, "both lost provinces to be taken up")
        taken_up = time.monotonic() - lost_at
        final = wait_status(manager, task_id, ("SUCCEEDED", "FAILED", "CANCELLED"), 60)
        ended = time.monotonic() - lost_at
    print(f"lost provinces taken up {taken_up:.1f} s after the loss; the refresh ended {ended:.1f} s after it")
    _exact(conn, final)
    assert ended < 60
    assert sorted(e["job_id"] for e in final["recovered"]) == sorted([deleted, taken_out])
    assert {e["kind"] for e in events} == {"province"}
    assert all(e["why"] and e["lost_since"] and e["at"] for e in events)
    assert _reconciled(conn) == {"province": 2}
    assert Job.fetch(deleted, connection=conn).get_status() == "finished"


def test_a_plan_job_deleted_before_it_ran_is_enqueued_again(
    conn: redis.Redis, env: dict[str, str], slow_upstream: RunningUpstream, tmp_path: Any
) -> None:
    manager = SyncTaskManager(Settings.from_env(env), conn, upstream={"kind": "http", "url": slow_upstream.url})
    task_id = manager.create_full_refresh_task()
    [plan] = as_texts(conn.smembers(keys.task_jobs(task_id)))
    Job.fetch(plan, connection=conn).delete()
    log = tmp_path / "scheduler.log"
    with scheduler_running(env, log), worker_process(env):
        lost_at = time.monotonic()
        final = wait_status(manager, task_id, ("SUCCEEDED", "FAILED", "CANCELLED"), 60)
        ended = time.monotonic() - lost_at
    _exact(conn, final)
    [event] = final["recovered"]
    assert event["kind"] == "plan" and event["job_id"] != plan and plan in event["why"]
    assert ended < 60
    assert _reconciled(conn) == {"plan": 1}
    assert len(log_lines(log, "reconcile: refresh")) == 1


def test_a_busy_refresh_through_a_flaky_upstream_a_deploy_and_a_crash_is_never_touched(
    conn: redis.Redis, slow_env: dict[str, str], tmp_path: Any
) -> None:
    """Every job of the refresh stays where a worker will take it from (queued, claimed, started, waiting in
    a failed registry for a retry, requeued by a warm shutdown or by the sweeper): nothing is ever taken up."""
    from jobs.upstream.serve import start_background

    log = tmp_path / "scheduler.log"
    with start_background(SCALE, latency_ms=20, fail_rate=0.02, seed=7) as upstream, \
            scheduler_running(slow_env, log):
        manager = SyncTaskManager(Settings.from_env(slow_env), conn, upstream={"kind": "http", "url": upstream.url})
        task_id = manager.create_full_refresh_task()
        with worker_process(slow_env) as first, worker_process(slow_env):
            wait_until(lambda: manager.get_task_status(task_id)["progress"] >= 20, 120, what="progress >= 20%")
            first.send_signal(signal.SIGTERM)  # a deploy: its job checkpoints and requeues itself at the front
            first.wait(timeout=90)  # (how soon it exits is tests/processes/test_deploys.py's business)
            with worker_process(slow_env) as second:
                wait_until(lambda: manager.get_task_status(task_id)["progress"] >= 50, 120, what="progress >= 50%")
                wait_until(lambda: work_horses(second.pid), 30, 0.02, "the new worker to run a job")
                kill_with_horses(second)  # a crash: its job waits in the started registry, then the failed one
                with worker_process(slow_env):
                    final = wait_status(manager, task_id, ("SUCCEEDED", "FAILED", "CANCELLED"), 180)
    _exact(conn, final)
    assert final["recovered"] == []
    assert _reconciled(conn) == {}
    assert log_lines(log, "reconcile:") == []


def test_a_task_waiting_for_a_running_slot_is_not_touched(
    conn: redis.Redis, slow_env: dict[str, str], slow_upstream: RunningUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One running task at a time, and two requests in flight: the first takes well over the reconciler's
    # confirmation window (about 30 s of requests), while the second waits in line.
    limits = {"REFRESHQ_MAX_CONCURRENT_TASKS": "1", "REFRESHQ_UPSTREAM_CONCURRENCY": "2"}
    for name, value in limits.items():
        monkeypatch.setenv(name, value)
    env = {**slow_env, **limits}
    manager = SyncTaskManager(Settings.from_env(env), conn, upstream={"kind": "http", "url": slow_upstream.url})
    first = manager.create_full_refresh_task()
    with scheduler_running(env), worker_process(env):
        wait_status(manager, first, ("RUNNING",), 60)
        second = manager.create_province_refresh_task("广东")
        wait_until(lambda: conn.zscore(keys.TASKS_WAITING, second) is not None, 60, what="the second task to wait")
        waited_from = time.monotonic()
        wait_status(manager, first, ("SUCCEEDED",), 120)
        waited = time.monotonic() - waited_from
        final = wait_status(manager, second, ("SUCCEEDED", "FAILED", "CANCELLED"), 60)
    assert waited > 15, "the second task did not wait long enough to show anything"
    assert final["status"] == "SUCCEEDED" and final["recovered"] == []
    assert manager.get_task_status(first)["recovered"] == []
    assert _reconciled(conn) == {}


# -- named runs ------------------------------------------------------------------------------------


def _record(conn: redis.Redis, task: str, job_id: str) -> dict[str, Any] | None:
    raw = conn.hget(keys.history_entries(task), history.attempt_id(job_id, 1))
    return json.loads(raw) if raw else None


def test_a_running_named_run_whose_worker_died_and_whose_job_vanished_ends_failed(
    conn: redis.Redis, tenv: dict[str, str]
) -> None:
    job_id = runs.enqueue_task(conn, registry().get("t-slow"), [60, "gone"], modules=registry().modules)
    with scheduler_running(tenv):
        with refreshq_process(["worker", "--queue", "low"], tenv) as worker:
            wait_until(lambda: (r := _record(conn, "t-slow", job_id)) and r["status"] == "RUNNING", 60,
                       what="the run to start")
            kill_with_horses(worker)
        Job.fetch(job_id, connection=conn).delete()  # before the started registry's cleanup saw it
        lost_at = time.monotonic()
        # Its dead worker's record names it for 15 s after its last heartbeat; then it is lost.
        record = wait_until(lambda: (r := _record(conn, "t-slow", job_id)) and r["status"] != "RUNNING" and r,
                            15 + TAKEN_UP_WITHIN, 0.1, "the run to end")
    print(f"the vanished run ended FAILED {time.monotonic() - lost_at:.1f} s after its worker died")
    assert record["status"] == "FAILED" and record["error"] == VANISHED
    assert _reconciled(conn) == {"run": 1}
    assert counters.read_counters(conn)[(counters.TASK_RUNS, "t-slow", "FAILED")] == 1


def test_a_queued_named_run_taken_out_of_its_queue_is_put_back_and_runs(
    conn: redis.Redis, tenv: dict[str, str]
) -> None:
    reg = registry()
    schedules.save(conn, schedules.make_schedule(reg, "t-add", interval=3600, args=[2, 3]), reg.get("t-add"),
                   time.time())
    [kept] = fire_schedules.run_now(conn, reg, "t-add").job_ids
    normal = queues.queue(conn, queues.NORMAL)
    conn.lrem(normal.key, 1, kept)  # out of its queue, its hash kept: it can run as it is
    with scheduler_running(tenv):
        wait_until(lambda: kept in normal.job_ids, TAKEN_UP_WITHIN, 0.1, "the run to be put back")
        with refreshq_process(["worker", "--queue", "normal"], tenv):
            assert runs.get_result(kept, timeout=60, conn=conn) == 5
    assert _reconciled(conn) == {"run": 1}


def test_a_queued_scheduled_run_whose_job_vanished_ends_failed_on_its_schedule(
    conn: redis.Redis, tenv: dict[str, str]
) -> None:
    reg = registry()
    schedules.save(conn, schedules.make_schedule(reg, "t-add", interval=3600, args=[2, 3]), reg.get("t-add"),
                   time.time())
    [gone] = fire_schedules.run_now(conn, reg, "t-add").job_ids
    Job.fetch(gone, connection=conn).delete()
    with scheduler_running(tenv):
        shown = wait_until(lambda: (d := schedules.describe(conn, "t-add"))["last_run_status"] == "FAILED" and d,
                           TAKEN_UP_WITHIN, 0.1, "the schedule to show its run failed")
    assert shown["last_run_error"] == VANISHED and shown["failed"] == 1
    assert as_text(conn.hget(keys.schedule("t-add"), "last_job_id") or b"") == gone
    assert not conn.sismember(keys.schedule_runs("t-add"), gone)
    assert _reconciled(conn) == {"run": 1}
