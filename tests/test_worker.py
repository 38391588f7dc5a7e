from __future__ import annotations

import json
import signal
import subprocess
import time
import zlib

import pytest
import redis
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from jobs import queues
from jobs.errors import ValidationError
from tests.conftest import REFRESHQ, REPO, run_cli
from workers import build_worker


def test_cli_worker_runs_a_json_serialized_job(conn: redis.Redis, env: dict[str, str]) -> None:
    q = queues.queue(conn, queues.NORMAL)
    job = q.enqueue("tests.job_functions.describe", {"b": 1, "a": [1, 2]})
    raw = conn.hget(job.key, "data")
    assert raw is not None
    assert json.loads(zlib.decompress(raw))[0] == "tests.job_functions.describe"  # JSON, not a pickle
    result = run_cli("worker", "--burst", "--queue", "normal", env={**env, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    done = Job.fetch(job.id, connection=conn, serializer=JSONSerializer)
    assert done.get_status() == JobStatus.FINISHED
    assert done.return_value() == {"keys": ["a", "b"], "size": 2}


def test_worker_drains_queues_in_priority_order(conn: redis.Redis) -> None:
    order = []
    for name in (queues.LOW, queues.NORMAL, queues.REFRESH, queues.HIGH, queues.CRITICAL):
        order.append((name, queues.queue(conn, name).enqueue("tests.job_functions.add", 1, 2)))
    w = build_worker(conn)
    w.work(burst=True)
    ended = {name: Job.fetch(j.id, connection=conn, serializer=JSONSerializer).ended_at for name, j in order}
    ranked = sorted(ended, key=lambda n: ended[n])  # type: ignore[arg-type,return-value]
    assert ranked == list(queues.ALL_QUEUES)
    assert all(Job.fetch(j.id, connection=conn, serializer=JSONSerializer).return_value() == 3 for _, j in order)


def test_unknown_queue_is_refused(conn: redis.Redis, env: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match="unknown queue nope"):
        build_worker(conn, ["nope"])
    result = run_cli("worker", "--queue", "nope", env=env)
    assert result.returncode == 2
    assert "unknown queue nope" in result.stderr


def test_worker_stops_cleanly_on_sigterm(conn: redis.Redis, env: dict[str, str]) -> None:
    proc = subprocess.Popen([REFRESHQ, "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not conn.keys("rq:worker:*"):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    deadline = time.monotonic() + 5
    while conn.smembers("rq:workers"):
        assert time.monotonic() < deadline, "worker did not unregister"
        time.sleep(0.05)
