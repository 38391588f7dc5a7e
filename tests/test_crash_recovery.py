"""Crash recovery that no registry sees: a killed worker's job resumed ahead of the jobs that took its place
meanwhile (jobs.duties.make_room), and a job a frozen worker's blocking wait took given back (workers.claims)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from jobs import keys, queues
from jobs.upstream.serve import DirectoryHandler, start_background
from tests.helpers import (
    Requests,
    refreshq_process,
    scheduler_running,
    wait_until,
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
        job = normal.enqueue("tests.job_functions.nap", 0, "ran")
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
