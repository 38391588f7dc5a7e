"""The fast mode (workers.fast) keeps RQ's data model: what it leaves in Redis, and every RQ behaviour a
job relies on, as RQ's own worker does it."""

from __future__ import annotations

import re
from typing import Any

import redis
from rq import SimpleWorker
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from jobs import queues
from workers.fast import build_fast_worker

HEX = re.compile(rb"[0-9a-f]{32}")
# Hash fields whose values must match too (the others hold times, ids, pids).
COMPARED = {b"status", b"origin", b"state", b"successful_job_count", b"failed_job_count", b"queues",
            b"result_ttl", b"description", b"timeout"}


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
    job = queue.enqueue("tests.job_functions.add", 1, 2)
    name = f"w-{worker_kind}"
    if worker_kind == "fast":
        build_fast_worker(conn, [queues.NORMAL], name=name).work(burst=True)
    else:
        SimpleWorker([queue], connection=conn, name=name, serializer=JSONSerializer).work(burst=True)
    done = Job.fetch(job.id, connection=conn, serializer=JSONSerializer)
    seen = (done.get_status(), done.return_value(), done.worker_name == name, bool(done.started_at),
            bool(done.ended_at), len(done.results()))
    return snapshot(conn, {job.id.encode(): b"<job>", name.encode(): b"<worker>"}), seen


def test_a_fast_worker_leaves_in_redis_what_rqs_worker_leaves(conn: redis.Redis) -> None:
    simple, simple_job = _run_one(conn, "simple")
    fast, fast_job = _run_one(conn, "fast")
    assert fast == simple
    assert fast_job == simple_job == (JobStatus.FINISHED, 3, True, True, True, 1)
