"""Workers and pools, watched and steered through Redis, so every action reaches pools and workers on
any machine: `refreshq workers ...` and the web API call these functions.

Workers are RQ's (its registry `rq:workers` lists them; `rq info` and rq-dashboard show them). A pool
(`refreshq worker --processes N`, workers.pool) adds a record that lists its workers and expires when
the pool stops renewing it, a wanted size that does not expire, and a command channel. Commands to one
worker go over RQ's pub/sub channel of that worker (RQ's `shutdown`, refreshq's drain).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import redis
from rq import Worker
from rq.command import send_command, send_shutdown_command
from rq.serializers import JSONSerializer

from jobs import keys
from jobs import queues as queue_names
from jobs.errors import ValidationError
from jobs.redis_values import as_text_map, as_texts

DRAIN_COMMAND = "refreshq-drain"  # on RQ's worker channel: finish the job in hand, take nothing new, exit
POOL_DRAIN, POOL_STOP, POOL_SCALE = "drain", "stop", "scale"
MAX_PROCESSES = 256
POOL_RECORD_TTL = 10  # seconds a pool's record outlives its last tick


def check_queues(names: Iterable[str]) -> tuple[str, ...]:
    """The queue names, each one of refreshq's (ValidationError naming the first that is not)."""
    names = tuple(names)
    unknown = [n for n in names if n not in queue_names.ALL_QUEUES]
    if unknown:
        expected = ", ".join(queue_names.ALL_QUEUES)
        raise ValidationError(f"unknown queue {', '.join(unknown)}: expected one of {expected}")
    return names


def check_processes(processes: int) -> int:
    if not 0 <= processes <= MAX_PROCESSES:
        raise ValidationError(f"processes must be 0 to {MAX_PROCESSES}, got {processes}")
    return processes


def list_pools(conn: redis.Redis) -> list[dict[str, Any]]:
    """The running pools (those whose record is fresh), by name."""
    names = sorted(as_texts(conn.smembers(keys.POOLS)))
    with conn.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hgetall(keys.pool(name))
            pipe.get(keys.pool_wanted(name))
        replies = pipe.execute()
    pools = []
    for name, raw, wanted in zip(names, replies[::2], replies[1::2], strict=True):
        if not raw:
            continue
        record = as_text_map(raw)
        members = json.loads(record.get("workers", "[]"))
        pools.append({
            "name": name, "host": record.get("host", ""), "pid": int(record.get("pid", 0)),
            "mode": record.get("mode", ""), "queues": [q for q in record.get("queues", "").split(",") if q],
            "state": record.get("state", ""), "wanted": int(wanted or record.get("wanted", 0)),
            "running": len(members), "workers": [m["name"] for m in members], "heartbeat": record.get("heartbeat", ""),
        })
    return pools


def suspensions(conn: redis.Redis) -> dict[str, Any]:
    """What is suspended: queues, pools, and RQ's own global flag (`rq suspend`)."""
    with conn.pipeline(transaction=False) as pipe:
        pipe.smembers(keys.SUSPENDED_QUEUES)
        pipe.smembers(keys.SUSPENDED_POOLS)
        pipe.exists(keys.RQ_SUSPENDED)
        found, pools, everything = pipe.execute()
    return {"queues": sorted(as_texts(found)), "pools": sorted(as_texts(pools)),
            "rq_suspended": bool(everything)}


def list_workers(conn: redis.Redis, pool: str | None = None, queue: str | None = None) -> list[dict[str, Any]]:
    """RQ's registered workers (optionally those of one pool, or listening on one queue), by name."""
    if queue is not None:
        check_queues([queue])
    member_of = {w: p["name"] for p in list_pools(conn) for w in p["workers"]}
    out = []
    for worker in sorted(Worker.all(connection=conn, serializer=JSONSerializer), key=lambda w: w.name):
        if (pool is not None and member_of.get(worker.name) != pool) or (queue and queue not in worker.queue_names()):
            continue
        out.append({
            "name": worker.name, "pool": member_of.get(worker.name), "host": worker.hostname, "pid": worker.pid,
            "state": worker.get_state(), "queues": worker.queue_names(), "current_job": worker.get_current_job_id(),
            "successful_jobs": worker.successful_job_count, "failed_jobs": worker.failed_job_count,
            "last_heartbeat": worker.last_heartbeat.isoformat() if worker.last_heartbeat else None,
        })
    return out


def overview(conn: redis.Redis, pool: str | None = None, queue: str | None = None) -> dict[str, Any]:
    """Pools, workers and suspensions in one answer (`refreshq workers list`, GET /api/v1/workers)."""
    pools = [p for p in list_pools(conn) if pool is None or p["name"] == pool]
    return {"pools": pools, "workers": list_workers(conn, pool, queue), "suspended": suspensions(conn)}


def suspend(conn: redis.Redis, queues: Sequence[str] = (), pool: str | None = None) -> dict[str, Any]:
    """No worker takes another job from `queues` (all of refreshq's when neither queues nor a pool is
    given), or no worker of `pool` takes any job. A job already running finishes."""
    names = check_queues(queues)
    with conn.pipeline() as pipe:
        if pool is not None:
            pipe.sadd(keys.SUSPENDED_POOLS, pool)
        if names or pool is None:
            pipe.sadd(keys.SUSPENDED_QUEUES, *(names or queue_names.ALL_QUEUES))
        pipe.execute()
    return suspensions(conn)


def resume(conn: redis.Redis, queues: Sequence[str] = (), pool: str | None = None) -> dict[str, Any]:
    """Undo `suspend` for `queues` or `pool`; with neither, every queue and pool refreshq suspended (RQ's
    own `rq suspend` is left to `rq resume`)."""
    names = check_queues(queues)
    with conn.pipeline() as pipe:
        if pool is not None:
            pipe.srem(keys.SUSPENDED_POOLS, pool)
        if names:
            pipe.srem(keys.SUSPENDED_QUEUES, *names)
        if not names and pool is None:
            pipe.delete(keys.SUSPENDED_QUEUES, keys.SUSPENDED_POOLS)
        queue_names.ring(pipe, names or queue_names.ALL_QUEUES)  # waiting workers look at once
        pipe.execute()
    return suspensions(conn)


def _targets(conn: redis.Redis, pool: str | None, worker: str | None) -> tuple[list[str], list[str]]:
    """(pools, standalone workers) an action reaches: one pool, one worker, or all of them."""
    pools = list_pools(conn)
    if pool is not None:
        if pool not in {p["name"] for p in pools}:
            raise ValidationError(f"no pool named {pool!r} is running")
        return [pool], []
    prefix = Worker.redis_worker_namespace_prefix
    names = {n.removeprefix(prefix) for n in as_texts(conn.smembers(Worker.redis_workers_keys))}
    if worker is not None:
        if worker not in names:
            raise ValidationError(f"no worker named {worker!r} is registered")
        return [], [worker]
    members = {w for p in pools for w in p["workers"]}
    return [p["name"] for p in pools], sorted(names - members)


def drain(conn: redis.Redis, pool: str | None = None, worker: str | None = None) -> dict[str, list[str]]:
    """Each worker reached finishes the job in hand, takes nothing new and exits; a pool reached drains
    all its workers and exits too. Returns the pools and workers asked."""
    pools, workers = _targets(conn, pool, worker)
    for name in pools:
        conn.publish(keys.pool_channel(name), POOL_DRAIN)
    for name in workers:
        send_command(conn, name, DRAIN_COMMAND)
    return {"pools": pools, "workers": workers}


def stop(conn: redis.Redis, pool: str | None = None, worker: str | None = None) -> dict[str, list[str]]:
    """A warm shutdown of each worker reached (a refresh job checkpoints and requeues itself at once, a
    named task gets a few seconds); a pool reached stops all its workers and exits."""
    pools, workers = _targets(conn, pool, worker)
    for name in pools:
        conn.publish(keys.pool_channel(name), POOL_STOP)
    for name in workers:
        send_shutdown_command(conn, name)
    return {"pools": pools, "workers": workers}


def scale(conn: redis.Redis, pool: str, processes: int) -> dict[str, Any]:
    """Set the number of processes `pool` is to run. Kept in Redis (it outlives the pool's restarts);
    a running pool converges within a second: it starts processes, or drains idle ones first."""
    check_processes(processes)
    if not pool:
        raise ValidationError("a pool name is required")
    with conn.pipeline() as pipe:
        pipe.set(keys.pool_wanted(pool), processes)
        pipe.sadd(keys.POOLS, pool)
        pipe.execute()
    listening = int(conn.publish(keys.pool_channel(pool), POOL_SCALE))
    return {"pool": pool, "wanted": processes, "running": bool(listening)}
