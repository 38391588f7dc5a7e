"""A stopping worker is not held by RQ's pub/sub thread (workers/channel.py): whatever that thread is doing
and whichever redis-py is installed, a SIGTERMed worker, idle or busy, and a drained busy pool's workers
exit within STOP_WITHIN seconds of their job's end -- every time, TRIES times at once."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from jobs import keys, queues
from tests.support.helpers import alive, refreshq_process, run_cli, wait_until
from workers import build_worker
from workers.fast import build_fast_worker

TRIES = 20
STOP_WITHIN = 5.0
RELEASE = "release"  # the busy workers' jobs end when the test pushes onto this list (tests.support.job_functions.hold)
BUILDERS: dict[str, Callable[..., Any]] = {"forking": build_worker, "fast": build_fast_worker}


@pytest.mark.parametrize("mode", sorted(BUILDERS))
def test_unsubscribing_returns_at_once_whatever_the_listener_is_doing(conn: redis.Redis, mode: str) -> None:
    """The state that held a stop 60 s on redis-py 8.2: the listener has already read the UNSUBSCRIBE
    answer, so it waits for a subscription (up to its sleep_time) instead of reading the socket."""
    worker = BUILDERS[mode](conn, [queues.NORMAL], name=f"stop-{mode}")
    worker.subscribe()
    pubsub = worker.pubsub
    wait_until(lambda: pubsub.subscribed, 5, what="the listener subscribed")
    pubsub.unsubscribe()
    wait_until(lambda: not pubsub.subscribed, 5, what="the listener to read the UNSUBSCRIBE answer")
    stopper = threading.Thread(target=worker.unsubscribe, daemon=True)
    started = time.monotonic()
    stopper.start()
    stopper.join(STOP_WITHIN)
    assert not stopper.is_alive(), f"unsubscribe() still waiting after {STOP_WITHIN} s"
    assert time.monotonic() - started < 2.0
    wait_until(lambda: not worker.listener.is_alive(), 5, what="the listener to end")


def _pool_members(conn: redis.Redis, pool: str) -> dict[str, int]:
    """Worker name -> pid, from the pool's record (what `workers list` shows)."""
    raw = conn.hget(keys.pool(pool), "workers")
    return {m["name"]: int(m["pid"]) for m in json.loads(raw or b"[]")}


def _ready_pool(conn: redis.Redis, pool: str) -> dict[str, int]:
    """Once all TRIES workers of the pool are registered with RQ (so listening on their channel): name -> pid."""
    def ready() -> dict[str, int] | None:
        members = _pool_members(conn, pool)
        names = {n.decode() for n in conn.smembers("rq:workers")}
        return members if len(members) == TRIES and all(f"rq:worker:{n}" in names for n in members) else None

    return wait_until(ready, 60, 0.1, f"{TRIES} workers of pool {pool} registered")  # type: ignore[no-any-return]


def _exit_times(pids: Iterable[int], timeout: float) -> dict[int, float]:
    """pid -> the wall-clock time it was first seen gone; those still running after `timeout` are left out."""
    left, gone = set(pids), {}
    deadline = time.monotonic() + timeout
    while left and time.monotonic() < deadline:
        for pid in [p for p in left if not alive(p)]:
            gone[pid] = time.time()
            left.discard(pid)
        time.sleep(0.02)
    return gone


def _busy(conn: redis.Redis, pool: str) -> dict[str, Job]:
    """TRIES held jobs, each started by another worker of the pool: worker name -> its job."""
    q = queues.queue(conn, queues.NORMAL)
    jobs = [q.enqueue("tests.support.job_functions.hold", RELEASE, "done") for _ in range(TRIES)]

    def started() -> dict[str, Job] | None:
        fetched = [Job.fetch(j.id, connection=conn, serializer=JSONSerializer) for j in jobs]
        by_worker = {j.worker_name: j for j in fetched if j.worker_name}
        return by_worker if len(by_worker) == TRIES else None

    return wait_until(started, 30, 0.05, f"{TRIES} jobs started by {TRIES} workers")  # type: ignore[no-any-return]


def _ended_at(conn: redis.Redis, job: Job) -> float:
    done = Job.fetch(job.id, connection=conn, serializer=JSONSerializer)
    assert done.get_status() == JobStatus.FINISHED and done.ended_at is not None
    ended: datetime = done.ended_at
    return (ended if ended.tzinfo else ended.replace(tzinfo=UTC)).timestamp()


def _late(conn: redis.Redis, jobs: dict[str, Job], members: dict[str, int], gone: dict[int, float]) -> list[str]:
    """The workers that did not exit within STOP_WITHIN s of their job's end, with how long they took."""
    late = []
    for name, job in jobs.items():
        pid = members[name]
        took = gone[pid] - _ended_at(conn, job) if pid in gone else None
        if took is None or took > STOP_WITHIN:
            late.append(f"{name}: {'still running' if took is None else f'{took:.1f} s'}")
    return late


@pytest.mark.parametrize("mode", ["forking", "fast"])
def test_sigtermed_idle_workers_exit_within_5_s(conn: redis.Redis, env: dict[str, str], mode: str) -> None:
    fast = ["--fast"] if mode == "fast" else []
    with refreshq_process(["worker", "--processes", str(TRIES), "--pool", "p", "--queue", "normal", *fast], env):
        members = _ready_pool(conn, "p")
        asked = {}
        for pid in members.values():
            os.kill(pid, signal.SIGTERM)
            asked[pid] = time.time()
        gone = _exit_times(members.values(), STOP_WITHIN + 10)
    took = {pid: gone[pid] - asked[pid] if pid in gone else None for pid in members.values()}
    late = [f"{pid}: {t if t is None else round(t, 1)}" for pid, t in took.items() if t is None or t > STOP_WITHIN]
    assert not late, f"{len(late)} of {TRIES} idle workers exited late after SIGTERM: {late}"


def test_sigtermed_busy_workers_exit_within_5_s_of_their_jobs_end(conn: redis.Redis, env: dict[str, str]) -> None:
    with refreshq_process(["worker", "--processes", str(TRIES), "--pool", "p", "--queue", "normal"], env):
        members = _ready_pool(conn, "p")
        jobs = _busy(conn, "p")
        for name in jobs:
            os.kill(members[name], signal.SIGTERM)  # a held job ignores the warm shutdown's request
        conn.rpush(RELEASE, *["go"] * TRIES)  # within the 8 s the warm shutdown gives a job
        gone = _exit_times(members.values(), STOP_WITHIN + 10)
    late = _late(conn, jobs, members, gone)
    assert not late, f"{len(late)} of {TRIES} busy workers exited late after SIGTERM: {late}"


def test_a_drained_busy_pool_exits_within_5_s_of_each_jobs_end(conn: redis.Redis, env: dict[str, str]) -> None:
    with refreshq_process(["worker", "--processes", str(TRIES), "--pool", "p", "--queue", "normal"], env) as pool:
        members = _ready_pool(conn, "p")
        jobs = _busy(conn, "p")
        result = run_cli("workers", "drain", "--pool", "p", env=env)
        assert result.returncode == 0, result.stderr
        # The pool signals its workers, then records that it drains: every worker has been asked by then.
        wait_until(lambda: conn.hget(keys.pool("p"), "state") == b"draining", 10, what="the pool draining")
        conn.rpush(RELEASE, *["go"] * TRIES)
        gone = _exit_times(members.values(), STOP_WITHIN + 10)
        late = _late(conn, jobs, members, gone)
        assert not late, f"{len(late)} of {TRIES} drained workers exited late: {late}"
        assert pool.wait(timeout=10) == 0
    assert conn.llen("done") == TRIES
