"""Crash recovery that no registry sees: a killed worker's job resumed ahead of the jobs that took its place
meanwhile (jobs.duties.make_room), and a job a frozen worker's blocking wait took given back (workers.claims)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from jobs import keys, queues
from jobs.config import Settings
from jobs.redis_values import as_text, as_texts
from jobs.refresh.manager import SyncTaskManager
from jobs.upstream.serve import DirectoryHandler, start_background
from tests.support.helpers import (
    Requests,
    kill_with_horses,
    log_lines,
    refreshq_process,
    scheduler_running,
    wait_until,
    worker_process,
)

pytestmark = pytest.mark.slow

# Every leaf's hospitals take this long to answer, two at a time: a province job takes half a minute or more,
# while the walks (the plan job's) answer at once.
HOSPITALS_SECONDS = 0.6


@contextmanager
def slow_hospitals(scale: int) -> Iterator[tuple[str, Requests]]:
    requests: Requests = []

    class Slow(DirectoryHandler):
        def do_GET(self) -> None:
            requests.append((time.monotonic(), self.path))
            if "/hospitals" in self.path:
                time.sleep(HOSPITALS_SECONDS)
            super().do_GET()

    with start_background(scale) as running:
        running.server.RequestHandlerClass = Slow
        yield running.url, requests


def _current_job(conn: redis.Redis, pid: int) -> str | None:
    for key in conn.smembers("rq:workers"):
        worker_pid, job = conn.hmget(key, "pid", "current_job")
        if worker_pid is not None and int(worker_pid) == pid and job:
            return as_text(job)
    return None


def _province(job_id: str | None) -> str | None:
    if not job_id or "-plan" in job_id:
        return None
    return job_id.rsplit("-p", 1)[1].split("-")[0]


def _big_province(conn: redis.Redis, task_id: str, job_id: str | None) -> str | None:
    """The province of a province job with 30 leaves or more, most of them to go (the first ones handed over
    are the provinces without cities, of one leaf)."""
    code = _province(job_id)
    if code is None:
        return None
    total, done = conn.hmget(keys.task_stats(task_id), [keys.province_stat(code, keys.PROVINCE_LEAVES_TOTAL),
                                                        keys.province_stat(code, keys.PROVINCE_LEAVES_DONE)])
    return code if int(total or 0) >= 30 and 2 * int(done or 0) < int(total or 0) else None


def test_the_only_workers_killed_job_resumes_ahead_of_the_province_its_replacement_took_meanwhile(
    conn: redis.Redis, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The killed job is back at the front of the queue 15-20 s after the kill, but the replacement worker,
    started at once, took the next province meanwhile: without a step back the killed one waits for that
    whole province (minutes with a slow upstream; once 166 s)."""
    monkeypatch.setenv("REFRESHQ_UPSTREAM_CONCURRENCY", "2")
    env = {**env, "REFRESHQ_UPSTREAM_CONCURRENCY": "2"}
    log = tmp_path / "scheduler.log"
    with slow_hospitals(20_000) as (url, requests), scheduler_running(env, log):
        manager = SyncTaskManager(Settings.from_env(env), conn, upstream={"kind": "http", "url": url})
        task_id = manager.create_full_refresh_task()
        with worker_process(env) as only:
            victim = wait_until(lambda: _big_province(conn, task_id, _current_job(conn, only.pid)), 120, 0.02,
                                "a big province job with most of its leaves to go")
            kill_with_horses(only)
            killed = time.monotonic()
        with worker_process(env) as replacement:
            took = wait_until(lambda: _province(_current_job(conn, replacement.pid)), 30, 0.02,
                              "the replacement to take a province")
            prefix = f"/regions/{victim[:2]}"
            resumed = wait_until(lambda: next((t for t, p in list(requests) if t > killed and prefix in p), None),
                                 90, 0.05, f"a request for {victim} after the kill") - killed
            ended = as_texts(conn.hkeys(keys.task_provinces_ended(task_id)))
            manager.cancel_task(task_id)
    print(f"{victim} resumed {resumed:.1f} s after the kill; the replacement had taken {took} first")
    assert took != victim
    assert took not in ended, f"{took} ended before {victim} resumed: it did not step back"
    assert resumed < 30
    assert log_lines(log, "make room:")


def _blocked(conn: redis.Redis) -> int:
    return int(conn.info("clients")["blocked_clients"])


def test_a_job_the_blocking_wait_of_a_frozen_worker_took_goes_back_to_the_queue_and_runs_once(
    conn: redis.Redis, env: dict[str, str]
) -> None:
    """A worker on one queue waits with BLMOVE straight into its claims list. Frozen in that wait (a VM stall,
    or its machine gone while the server still holds the wait), the job pushed meanwhile lands in its claims:
    it goes back to the queue once the frozen worker's claims lapse, runs on another worker, and the frozen
    one, thawed, does not run it again."""
    normal = queues.queue(conn, queues.NORMAL)
    with scheduler_running(env), refreshq_process(["worker", "--queue", "normal"], env) as frozen:
        wait_until(lambda: _blocked(conn), 30, what="the worker to wait")
        os.kill(frozen.pid, signal.SIGSTOP)
        job = normal.enqueue("tests.support.job_functions.nap", 0, "ran")
        wait_until(lambda: _blocked(conn) == 0, 10, what="the server to answer the frozen worker's wait")
        assert conn.llen(normal.key) == 0 and list(conn.scan_iter(keys.CLAIMS_PREFIX + "*"))  # in its claims
        wait_until(lambda: job.id in normal.job_ids, 60, 0.1, "the lapsed claim to go back to the queue")
        with refreshq_process(["worker", "--queue", "normal"], env):
            wait_until(lambda: _status(conn, job) == JobStatus.FINISHED, 30, what="the job, run by the other worker")
            os.kill(frozen.pid, signal.SIGCONT)
            wait_until(lambda: _blocked(conn) >= 2, 30, what="both workers to wait again")
    assert conn.lrange("ran", 0, -1) == [job.id.encode()]


def _status(conn: redis.Redis, job: Job) -> JobStatus:
    return Job.fetch(job.id, connection=conn, serializer=JSONSerializer).get_status()
