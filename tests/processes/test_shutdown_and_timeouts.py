"""A worker's warm shutdown requeues its refresh from the checkpoint; the hard time limit fails a task."""

from __future__ import annotations

import os
import signal
import threading

import pytest
import redis
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from jobs import keys, queues, shutdown
from jobs.config import Settings
from jobs.redis_values import as_texts
from jobs.refresh.manager import SyncTaskManager
from jobs.upstream.sample import SampleDirectory
from jobs.upstream.serve import RunningUpstream
from scheduler import Scheduler, default_duties
from tests.support.helpers import checksum, exported, province_hospitals, wait_status, wait_until, worker_process
from workers import build_worker

SCALE = 12_000
pytestmark = pytest.mark.upstream(scale=SCALE, latency_ms=40)  # the `slow_upstream` of these tests


def test_sigterm_makes_the_running_refresh_checkpoint_and_requeue(
    settings: Settings, conn: redis.Redis, env: dict[str, str], slow_upstream: RunningUpstream
) -> None:
    manager = SyncTaskManager(settings, conn, upstream={"kind": "http", "url": slow_upstream.url})
    task_id = manager.create_province_refresh_task("四川省")
    with worker_process(env) as worker:
        wait_until(lambda: int(conn.hget(keys.task_stats(task_id), "leaves_done") or 0) >= 20, 60,
                   what="some leaves staged")
        os.kill(worker.pid, signal.SIGTERM)
        assert worker.wait(timeout=20) == 0  # promptly, not after the province is done
    status = manager.get_task_status(task_id)
    assert status["status"] == "RUNNING"
    done_at_shutdown = int(conn.hget(keys.task_stats(task_id), "leaves_done") or 0)
    assert done_at_shutdown < int(conn.hget(keys.task_stats(task_id), "leaves_total") or 0)
    [province_job] = [
        Job.fetch(j, connection=conn, serializer=JSONSerializer)
        for j in as_texts(conn.smembers(keys.task_jobs(task_id))) if "-p510000-" in j
    ]
    assert province_job.get_status() == JobStatus.QUEUED  # requeued, not failed
    assert province_job.id in queues.queue(conn, queues.REFRESH).job_ids
    with worker_process(env):
        final = wait_status(manager, task_id, ("SUCCEEDED", "FAILED"), timeout=120)
    assert final["status"] == "SUCCEEDED"
    assert checksum(exported(conn, "510000")) == checksum(province_hospitals(SampleDirectory(SCALE), "51"))


@pytest.mark.slow
def test_the_hard_time_limit_fails_the_task_and_the_soft_one_is_recorded(
    conn: redis.Redis, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, slow_upstream: RunningUpstream
) -> None:
    monkeypatch.setenv("REFRESHQ_TASK_TIMEOUT", "3")
    settings = Settings.from_env()
    manager = SyncTaskManager(settings, conn, upstream={"kind": "http", "url": slow_upstream.url})
    task_id = manager.create_full_refresh_task()
    scheduler = Scheduler(conn, default_duties(settings), tick=0.2)
    thread = threading.Thread(target=scheduler.run)
    thread.start()
    try:
        with worker_process(env):
            final = wait_status(manager, task_id, ("SUCCEEDED", "FAILED", "CANCELLED"), timeout=60)
    finally:
        scheduler.stop()
        thread.join()
    assert final["status"] == "FAILED"
    assert final["error_message"].startswith("TaskTimeoutError")
    assert "3 s" in final["error_message"]
    assert final["soft_limit_exceeded_at"] is not None
    assert final["statistics"]["hospitals_found"] < SCALE


def test_a_work_horse_forked_after_its_worker_was_asked_to_stop_stops_too(conn: redis.Redis) -> None:
    """A SIGTERM between the dequeue and the fork reaches no horse: the horse then finds the worker's stop flag
    set and keeps it (the job checkpoints at its first safe point instead of running to its end)."""
    worker = build_worker(conn, [queues.REFRESH])
    read, write = os.pipe()
    shutdown.requested.set()  # the worker's handler raised it just before the fork
    try:
        pid = os.fork()
        if pid == 0:  # the horse
            worker.setup_work_horse_signals()
            os.write(write, b"1" if shutdown.requested.is_set() else b"0")
            os._exit(0)
        os.waitpid(pid, 0)
    finally:
        shutdown.requested.clear()
    assert os.read(read, 1) == b"1"
