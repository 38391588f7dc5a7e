from __future__ import annotations

import json
import signal
import zlib

import pytest
import redis
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from jobs import queues
from jobs.errors import ValidationError
from tests.support.helpers import REPO, refreshq_process, run_cli, wait_until
from workers import build_worker


def test_cli_worker_runs_a_json_serialized_job(conn: redis.Redis, env: dict[str, str]) -> None:
    q = queues.queue(conn, queues.NORMAL)
    job = q.enqueue("tests.support.job_functions.describe", {"b": 1, "a": [1, 2]})
    raw = conn.hget(job.key, "data")
    assert raw is not None
    assert json.loads(zlib.decompress(raw))[0] == "tests.support.job_functions.describe"  # JSON, not a pickle
    result = run_cli("worker", "--burst", "--queue", "normal", env={**env, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    done = Job.fetch(job.id, connection=conn, serializer=JSONSerializer)
    assert done.get_status() == JobStatus.FINISHED
    assert done.return_value() == {"keys": ["a", "b"], "size": 2}


def _drained_order(conn: redis.Redis, jobs: list[tuple[str, Job]]) -> list[str]:
    build_worker(conn).work(burst=True)
    ended = {job.id: Job.fetch(job.id, connection=conn, serializer=JSONSerializer) for _, job in jobs}
    assert all(j.return_value() == 3 for j in ended.values())
    return [name for name, job in sorted(jobs, key=lambda item: ended[item[1].id].ended_at)]  # type: ignore[arg-type,return-value]


def test_worker_drains_urgent_queues_first_and_refresh_and_routine_jobs_in_turn(conn: redis.Redis) -> None:
    jobs = [(name, queues.queue(conn, name).enqueue("tests.support.job_functions.add", 1, 2))
            for name in (queues.LOW, queues.NORMAL, queues.REFRESH, queues.HIGH, queues.CRITICAL)]
    # Urgent first; then routine (normal before low) and refresh jobs take turns.
    assert _drained_order(conn, jobs) == [queues.CRITICAL, queues.HIGH, queues.NORMAL, queues.REFRESH, queues.LOW]


def test_a_refresh_backlog_lets_a_named_task_through_after_each_refresh_job(conn: redis.Redis) -> None:
    refresh = [(queues.REFRESH, queues.queue(conn, queues.REFRESH).enqueue("tests.support.job_functions.add", 1, 2))
               for _ in range(4)]
    routine = [(name, queues.queue(conn, name).enqueue("tests.support.job_functions.add", 1, 2))
               for name in (queues.LOW, queues.NORMAL, queues.NORMAL)]
    order = _drained_order(conn, refresh + routine)
    assert order == [queues.NORMAL, queues.REFRESH, queues.NORMAL, queues.REFRESH, queues.LOW,
                     queues.REFRESH, queues.REFRESH]


def test_unknown_queue_is_refused(conn: redis.Redis, env: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match="unknown queue nope"):
        build_worker(conn, ["nope"])
    result = run_cli("worker", "--queue", "nope", env=env)
    assert result.returncode == 2
    assert "unknown queue nope" in result.stderr


def test_worker_stops_cleanly_on_sigterm(conn: redis.Redis, env: dict[str, str]) -> None:
    with refreshq_process(["worker"], env) as proc:
        wait_until(lambda: conn.keys("rq:worker:*") or proc.poll() is not None, 30, what="the worker to register")
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert conn.smembers("rq:workers") == set()  # it unregistered before it exited
