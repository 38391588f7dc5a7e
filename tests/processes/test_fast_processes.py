"""Fast workers as processes: seen by `rq info` and rq-dashboard as any RQ worker, stopped mid-job by
RQ's stop-job command, heartbeating through a long job, its time limit held when the job ignores it,
and a SIGKILL mid-job ending in the failed registry as abandoned, then retried by the sweeper."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import redis
from rq.command import send_stop_job_command
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from jobs import failures, keys, queues, workforce
from jobs.config import Settings
from tests.processes.test_pools import live_children, pool_process
from tests.support.helpers import REFRESHQ, REPO, scheduler_running, wait_until
from tests.support.web_helpers import served
from web.app import create_app

RQ = str(Path(sys.executable).parent / "rq")  # RQ's own CLI, next to this interpreter


def _fetch(conn: redis.Redis, job_id: str) -> Job:
    return Job.fetch(job_id, connection=conn, serializer=JSONSerializer)


def _running(conn: redis.Redis, job: Job) -> str:
    return wait_until(lambda: _fetch(conn, job.id).get_status() == JobStatus.STARTED
                      and _fetch(conn, job.id).worker_name, 30, what=f"job {job.id} to start")  # type: ignore[no-any-return]


def test_rq_info_and_the_dashboard_see_a_fast_worker_and_its_jobs(
    conn: redis.Redis, env: dict[str, str], settings: Settings, redis_url: str
) -> None:
    q = queues.queue(conn, queues.NORMAL)
    with pool_process(env, "--processes", "1", "--pool", "f", "--fast"):
        done = q.enqueue("tests.support.job_functions.add", 1, 2)
        busy = q.enqueue("tests.support.job_functions.nap", 30)
        worker = _running(conn, busy)
        info = subprocess.run([RQ, "info", "-u", redis_url], capture_output=True, text=True, timeout=30)
        assert info.returncode == 0, info.stderr
        assert worker in info.stdout and "busy" in info.stdout
        with served(create_app(settings, redis_url)) as url, httpx.Client(base_url=url) as client:
            workers = client.get("/rq/0/data/workers.json").json()["workers"]
            assert [w["current_job"]["job_id"] for w in workers if w["name"] == worker] == [busy.id]
            finished = client.get("/rq/0/data/jobs/normal/finished/8/asc/1.json").json()
            assert [j["id"] for j in finished["jobs"]] == [done.id]
            started = client.get("/rq/0/data/jobs/normal/started/8/asc/1.json").json()
            assert [j["id"] for j in started["jobs"]] == [busy.id]


def test_rqs_stop_job_command_stops_a_job_on_a_fast_worker(conn: redis.Redis, env: dict[str, str]) -> None:
    q = queues.queue(conn, queues.NORMAL)
    with pool_process(env, "--processes", "1", "--pool", "f", "--fast"):
        job = q.enqueue("tests.support.job_functions.nap", 60)
        _running(conn, job)
        send_stop_job_command(conn, job.id, serializer=JSONSerializer)
        wait_until(lambda: _fetch(conn, job.id).get_status() == JobStatus.STOPPED, 20)
        assert job.id in FailedJobRegistry(queue=q)
        assert failures.take(conn, job.id)["kind"] == failures.NEVER  # type: ignore[index]
        after = q.enqueue("tests.support.job_functions.add", 1, 1)  # the worker carries on
        wait_until(lambda: _fetch(conn, after.id).get_status() == JobStatus.FINISHED, 20)


def test_a_long_job_on_a_fast_worker_heartbeats(conn: redis.Redis, env: dict[str, str]) -> None:
    q = queues.queue(conn, queues.NORMAL)
    with pool_process(env, "--processes", "1", "--pool", "f", "--fast"):
        job = q.enqueue("tests.support.job_functions.nap", 12)
        _running(conn, job)
        started = _fetch(conn, job.id).last_heartbeat
        first_expiry = _registry_expiry(conn, job)
        assert started is not None and first_expiry < time.time() + 16  # lapses soon unless renewed
        # RQ's SimpleWorker would leave the first heartbeat alone for the whole job (timeout + 60 s).
        wait_until(lambda: (_fetch(conn, job.id).last_heartbeat or started) > started, 8, what="a heartbeat")
        assert _registry_expiry(conn, job) > first_expiry + 3  # the started registry's entry renewed too


def _registry_expiry(conn: redis.Redis, job: Job) -> float:
    entries = conn.zrange(StartedJobRegistry(job.origin, connection=conn).key, 0, -1, withscores=True)
    return next(score for member, score in entries if member.decode().startswith(job.id))


def test_a_job_ignoring_its_time_limit_is_failed_and_its_worker_replaced(
    conn: redis.Redis, env: dict[str, str]
) -> None:
    q = queues.queue(conn, queues.NORMAL)
    with pool_process(env, "--processes", "1", "--pool", "f", "--fast") as proc:
        job = q.enqueue("tests.support.job_functions.stubborn", 60, job_timeout=1)
        _running(conn, job)
        first = live_children(proc)
        wait_until(lambda: _fetch(conn, job.id).get_status() == JobStatus.FAILED, 30, what="the hard limit")
        assert job.id in FailedJobRegistry(queue=q)
        assert "did not stop" in (_fetch(conn, job.id).latest_result().exc_string or "")  # type: ignore[union-attr]
        wait_until(lambda: live_children(proc) and live_children(proc) != first, 20, what="a new worker")


def test_a_sigkilled_fast_worker_s_job_is_abandoned_then_retried(conn: redis.Redis, env: dict[str, str]) -> None:
    q = queues.queue(conn, queues.NORMAL)
    with pool_process(env, "--processes", "1", "--pool", "f", "--fast") as proc, scheduler_running(env):
        job = q.enqueue("tests.support.job_functions.hang_once", "hung")
        _running(conn, job)
        # Killed inside the function, not between RQ's start and its call: a first run killed before it set
        # its mark would leave the retry to hang instead (seen on a loaded machine).
        wait_until(lambda: conn.exists("hung"), 30, 0.01, "the first run to hang")
        killed_at = time.monotonic()
        os.kill(live_children(proc)[0], signal.SIGKILL)
        wait_until(lambda: _fetch(conn, job.id).get_status() == JobStatus.FINISHED, 60, what="the retry")
        assert time.monotonic() - killed_at < 40
        state = conn.hgetall(keys.job_retry(job.id))
        assert state[b"exception"].decode() == failures.ABANDONED and state[b"attempt"] == b"1"
        kinds = [r.type for r in _fetch(conn, job.id).results()]
        assert kinds[0].name == "SUCCESSFUL" and "FAILED" in [k.name for k in kinds[1:]]
        assert _fetch(conn, job.id).return_value() == "second time lucky"
        assert workforce.list_pools(conn)[0]["running"] == 1


def test_sigterm_gives_a_running_job_its_budget_then_interrupts_it(conn: redis.Redis, env: dict[str, str]) -> None:
    q = queues.queue(conn, queues.NORMAL)
    proc = subprocess.Popen([REFRESHQ, "worker", "--fast", "--queue", "normal"], env={**env, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        job = q.enqueue("tests.support.job_functions.nap", 60)
        _running(conn, job)
        waiting = q.enqueue("tests.support.job_functions.add", 1, 1)
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert 6 < time.monotonic() - signalled < 12  # WARM_SHUTDOWN_BUDGET (8 s), then the interrupt
        assert _fetch(conn, job.id).get_status() == JobStatus.FAILED and job.id in FailedJobRegistry(queue=q)
        assert q.job_ids == [waiting.id]  # nothing new taken after the SIGTERM
        assert workforce.list_workers(conn) == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
