"""A worker and its work-horse killed with SIGKILL mid-refresh: another worker resumes from the checkpoint."""

from __future__ import annotations

import os
import re
import signal

import pytest
import redis
from rq.registry import StartedJobRegistry

from jobs import keys
from jobs.config import Settings
from jobs.redis_values import as_text_map, as_texts
from jobs.refresh.manager import SyncTaskManager
from jobs.upstream.sample import SampleDirectory
from jobs.upstream.serve import RunningUpstream
from tests.support.helpers import (
    checksum,
    exported,
    scheduler_running,
    wait_status,
    wait_until,
    work_horses,
    worker_process,
)

SCALE = 20_000
pytestmark = [pytest.mark.slow, pytest.mark.upstream(scale=SCALE, latency_ms=40)]  # upstream: `slow_upstream`


def test_sigkill_of_worker_and_horse_loses_and_duplicates_nothing(
    settings: Settings,
    conn: redis.Redis,
    env: dict[str, str],
    slow_upstream: RunningUpstream,
) -> None:
    manager = SyncTaskManager(settings, conn, upstream={"kind": "http", "url": slow_upstream.url})
    task_id = manager.create_full_refresh_task()
    with scheduler_running(env):
        with worker_process(env) as first:
            wait_until(lambda: manager.get_task_status(task_id)["progress"] >= 15, 120, what="progress >= 15%")
            # Kill in the middle of a province job, not as one ends or the next one starts (then nothing
            # would be abandoned: the test would prove nothing).
            wait_until(lambda: _mid_province(conn, task_id), 60, 0.01, "a province job with leaves left")
            horses = wait_until(lambda: work_horses(first.pid), 10, what="a work-horse")
            done_before = int(conn.hget(keys.task_stats(task_id), "leaves_done") or 0)
            os.kill(first.pid, signal.SIGKILL)
            for pid in horses:
                os.kill(pid, signal.SIGKILL)
        progress_at_kill = manager.get_task_status(task_id)["progress"]
        assert manager.get_task_status(task_id)["status"] == "RUNNING"
        with worker_process(env):
            final = wait_status(manager, task_id, ("SUCCEEDED", "FAILED", "CANCELLED"), timeout=180)
    assert final["status"] == "SUCCEEDED", final
    assert final["progress"] == 100 >= progress_at_kill
    assert 0 < done_before < final["statistics"]["districts_processed"] + 100
    assert final["statistics"]["hospitals_found"] == SCALE  # counted once, even for re-run leaves
    job_ids = as_texts(conn.smembers(keys.task_jobs(task_id)))
    retried = [as_text_map(conn.hgetall(keys.job_retry(j))) for j in job_ids]
    lost = [r for r in retried if r.get("kind") == "transient" and "AbandonedJobError" in r.get("last_error", "")]
    assert lost, "the killed province job was not retried as a lost-worker failure"
    assert checksum(exported(conn)) == checksum(SampleDirectory(SCALE).all_hospitals())


def _mid_province(conn: redis.Redis, task_id: str) -> bool:
    """True while a province job is in the started registry with at least 5 of its leaves to go."""
    stats = as_text_map(conn.hgetall(keys.task_stats(task_id)))
    for job_id in StartedJobRegistry("refresh", connection=conn).get_job_ids():
        match = re.search(r"-p(\d+)-\d+$", job_id)  # a province job, not the plan job (-plan)
        if match is None:
            continue
        code = match.group(1)
        total, done = int(stats.get(f"p:{code}:leaves_total", 0)), int(stats.get(f"p:{code}:leaves_done", 0))
        if total - done >= 5:
            return True
    return False
