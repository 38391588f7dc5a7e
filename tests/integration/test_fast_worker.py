"""The fast mode (workers.fast) keeps RQ's data model: what it leaves in Redis, and every RQ behaviour a
job relies on, as RQ's own worker does it."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
import redis
from rq import Callback, Retry, SimpleWorker
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry
from rq.results import Result
from rq.serializers import JSONSerializer

from jobs import failures, queues
from jobs.named.workflows import batch, chain, get_workflow
from tests.support import named_task_functions as f
from tests.support.named_helpers import named_env, trace
from workers.channel import ChannelMixin
from workers.fast import FAST_QUEUES, build_fast_worker

HEX = re.compile(rb"[0-9a-f]{32}")
# Hash fields whose values must match too (the others hold times, ids, pids).
COMPARED = {b"status", b"origin", b"state", b"successful_job_count", b"failed_job_count", b"queues",
            b"result_ttl", b"description", b"timeout"}


class RQSimpleWorker(ChannelMixin, SimpleWorker):
    """RQ's SimpleWorker, its command channel listened to as refreshq's workers do: RQ's own listener held
    its stop for up to 60 s on redis-py 8.2 (workers/channel.py). What it leaves in Redis is RQ's."""


def _norm(value: bytes, names: dict[bytes, bytes]) -> bytes:
    for old, new in names.items():
        value = value.replace(old, new)
    return HEX.sub(b"<hex>", value)


def snapshot(conn: redis.Redis, names: dict[bytes, bytes]) -> dict[bytes, Any]:
    """Every rq key: its type, TTL or not, and its content's shape (names normalized)."""
    out: dict[bytes, Any] = {}
    for key in conn.scan_iter(match="rq:*"):
        kind = conn.type(key)
        shape: Any
        if kind == b"hash":
            raw = conn.hgetall(key)
            shape = sorted((_norm(k, names), raw[k] if k in COMPARED else b"") for k in raw)
        elif kind == b"zset":
            shape = sorted(_norm(m, names) for m in conn.zrange(key, 0, -1))
        elif kind in (b"list", b"set"):
            items = conn.lrange(key, 0, -1) if kind == b"list" else conn.smembers(key)
            shape = sorted(_norm(m, names) for m in items)
        elif kind == b"stream":
            shape = [sorted(fields) for _id, fields in conn.xrange(key)]
        else:
            shape = conn.get(key)
        out[_norm(key, names)] = (kind, conn.ttl(key) > 0, shape)
    return out


def _run_one(conn: redis.Redis, worker_kind: str) -> tuple[dict[bytes, Any], tuple[Any, ...]]:
    conn.flushdb()
    queues.register_queues(conn)
    queue = queues.queue(conn, queues.NORMAL)
    job = queue.enqueue("tests.support.job_functions.add", 1, 2)
    name = f"w-{worker_kind}"
    if worker_kind == "fast":
        build_fast_worker(conn, [queues.NORMAL], name=name).work(burst=True)
    else:
        RQSimpleWorker([queue], connection=conn, name=name, serializer=JSONSerializer).work(burst=True)
    done = Job.fetch(job.id, connection=conn, serializer=JSONSerializer)
    seen = (done.get_status(), done.return_value(), done.worker_name == name, bool(done.started_at),
            bool(done.ended_at), len(done.results()))
    return snapshot(conn, {job.id.encode(): b"<job>", name.encode(): b"<worker>"}), seen


def test_a_fast_worker_leaves_in_redis_what_rqs_worker_leaves(conn: redis.Redis) -> None:
    simple, simple_job = _run_one(conn, "simple")
    fast, fast_job = _run_one(conn, "fast")
    assert fast == simple
    assert fast_job == simple_job == (JobStatus.FINISHED, 3, True, True, True, 1)


def fast_drain(conn: redis.Redis, names: tuple[str, ...] = (queues.NORMAL,)) -> None:
    build_fast_worker(conn, names, name="fast-1").work(burst=True)


def _fetch(conn: redis.Redis, job_id: str) -> Job:
    return Job.fetch(job_id, connection=conn, serializer=JSONSerializer)


def test_results_are_fetched_as_from_rqs_worker(conn: redis.Redis) -> None:
    q = queues.queue(conn, queues.NORMAL)
    jobs = [q.enqueue("tests.support.job_functions.describe", {"n": i, "x": None}) for i in range(30)]
    fast_drain(conn)
    for job in jobs:
        done = _fetch(conn, job.id)
        assert done.get_status() == JobStatus.FINISHED and done.return_value() == {"keys": ["n", "x"], "size": 2}
        assert done.latest_result().type == Result.Type.SUCCESSFUL  # type: ignore[union-attr]
    assert len(q.finished_job_registry) == 30 and len(q.started_job_registry) == 0 and q.count == 0
    worker_counts = conn.hget("rq:worker:fast-1", "successful_job_count")
    assert worker_counts == b"30"


def test_a_failure_lands_in_rqs_failed_registry(conn: redis.Redis) -> None:
    q = queues.queue(conn, queues.NORMAL)
    bad = q.enqueue("tests.support.job_functions.fail_with", "no good")
    good = q.enqueue("tests.support.job_functions.add", 2, 2)
    fast_drain(conn)
    failed = _fetch(conn, bad.id)
    assert failed.get_status() == JobStatus.FAILED and bad.id in FailedJobRegistry(queue=q)
    assert "ValidationError: no good" in (failed.latest_result().exc_string or "")  # type: ignore[union-attr]
    assert failures.take(conn, bad.id)["kind"] == failures.PERMANENT  # type: ignore[index]
    assert _fetch(conn, good.id).return_value() == 4  # the worker went on


def test_rqs_retry_runs_a_failing_job_again(conn: redis.Redis) -> None:
    q = queues.queue(conn, queues.NORMAL)
    job = q.enqueue("tests.support.job_functions.count_then_fail", "runs", retry=Retry(max=2))
    fast_drain(conn)
    assert conn.llen("runs") == 3  # the first run and two retries
    done = _fetch(conn, job.id)
    assert done.get_status() == JobStatus.FAILED and done.retries_left == 0


def test_dependents_are_enqueued_when_their_dependency_finishes(conn: redis.Redis) -> None:
    q = queues.queue(conn, queues.NORMAL)
    first = q.enqueue("tests.support.job_functions.nap", 0, "order")
    second = q.enqueue("tests.support.job_functions.nap", 0, "order", depends_on=first)
    third = q.enqueue("tests.support.job_functions.nap", 0, "order", depends_on=[first, second])
    assert _fetch(conn, second.id).get_status() == JobStatus.DEFERRED
    fast_drain(conn)
    assert conn.lrange("order", 0, -1) == [j.id.encode() for j in (first, second, third)]


def test_chains_and_batches_run_on_fast_workers(conn: redis.Redis, env: dict[str, str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    named_env(env, monkeypatch)
    chain_id = chain(f.step.s("first"), f.add.s(1, 2), f.step.s("last")).delay()
    batch_id = batch([f.step.s("a"), f.step.s("b")], callback=f.step.s("after")).delay()
    fast_drain(conn, FAST_QUEUES)
    assert get_workflow(conn, chain_id)["status"] == "SUCCEEDED"
    assert get_workflow(conn, batch_id)["status"] == "SUCCEEDED"
    order = trace(conn)
    assert order.index("first") < order.index("add 1 2") < order.index("last")
    assert order.index("after") > max(order.index("a"), order.index("b"))


def test_success_and_failure_callbacks_run(conn: redis.Redis) -> None:
    q = queues.queue(conn, queues.NORMAL)
    ok = q.enqueue("tests.support.job_functions.add", 1, 2,
                   on_success=Callback("tests.support.job_functions.on_success"))
    bad = q.enqueue("tests.support.job_functions.broken", on_failure=Callback("tests.support.job_functions.on_failure"))
    fast_drain(conn)
    assert sorted(conn.lrange("callbacks", 0, -1)) == sorted(
        [f"success {ok.id} 3".encode(), f"failure {bad.id} ValidationError".encode()])


def test_a_job_past_its_timeout_fails_as_timed_out(conn: redis.Redis) -> None:
    q = queues.queue(conn, queues.NORMAL)
    job = q.enqueue("tests.support.job_functions.nap", 30, job_timeout=1)
    started = time.monotonic()
    fast_drain(conn)
    assert time.monotonic() - started < 10
    done = _fetch(conn, job.id)
    assert done.get_status() == JobStatus.FAILED and job.id in FailedJobRegistry(queue=q)
    assert "JobTimeoutException" in (done.latest_result().exc_string or "")  # type: ignore[union-attr]
