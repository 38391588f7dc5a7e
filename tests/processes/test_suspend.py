"""Per-queue and per-pool suspension: a worker takes no job from a suspended queue, not even the one a
blocking wait was already waiting for; claims of a dead worker go back to the front of their queue."""

from __future__ import annotations

import os
import signal

import pytest
import redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from jobs import keys, queues, workforce
from jobs.duties.orphaned_claims import requeue_orphaned_claims
from jobs.errors import ValidationError
from jobs.named.schedules import JSONQueue
from tests.processes.test_pools import live_children, pool_process
from tests.support.helpers import run_cli, wait_until
from workers.claims import Claimer


def _status(conn: redis.Redis, job: Job) -> JobStatus:
    return Job.fetch(job.id, connection=conn, serializer=JSONSerializer).get_status()


@pytest.mark.parametrize("mode", [[], ["--fast"]], ids=["forking", "fast"])
def test_a_suspended_queue_is_held_while_another_drains_and_released_on_resume(
    conn: redis.Redis, env: dict[str, str], mode: list[str]
) -> None:
    normal, low = queues.queue(conn, queues.NORMAL), queues.queue(conn, queues.LOW)
    with pool_process(env, "--processes", "1", "--pool", "p", "--queue", "normal", "--queue", "low", *mode):
        # The worker is idle, blocked waiting on both queues, when the suspension comes.
        wait_until(lambda: [w for w in workforce.list_workers(conn) if w["state"] == "idle"], 30, what="idle")
        result = run_cli("workers", "suspend", "--queue", "normal", env=env)
        assert result.returncode == 0 and "suspended queues: normal" in result.stdout, result.stderr
        held = [normal.enqueue("tests.support.job_functions.add", i, 1) for i in range(3)]
        passing = [low.enqueue("tests.support.job_functions.add", i, 2) for i in range(3)]
        # normal's jobs came first and a worker waiting on both queues would take them first: the low
        # queue's jobs finishing shows the worker went past them.
        wait_until(lambda: all(_status(conn, j) == JobStatus.FINISHED for j in passing), 30)
        assert [_status(conn, j) for j in held] == [JobStatus.QUEUED] * 3
        assert normal.job_ids == [j.id for j in held]  # in order, none taken
        assert run_cli("workers", "resume", "--queue", "normal", env=env).returncode == 0
        wait_until(lambda: all(_status(conn, j) == JobStatus.FINISHED for j in held), 30)


def test_a_claimed_batch_does_not_start_once_its_queue_is_suspended(conn: redis.Redis) -> None:
    normal = queues.queue(conn, queues.NORMAL)
    jobs = [normal.enqueue("tests.support.job_functions.add", i, 1) for i in range(3)]
    claimer = Claimer(conn, "w1", "", JSONSerializer)
    got = claimer.claim([normal], 10, None)
    assert [j.id for j, _ in got.jobs] == [j.id for j in jobs] and normal.job_ids == []
    workforce.suspend(conn, [queues.NORMAL])
    waiting, started = claimer.step([queues.NORMAL], [], "", (queues.NORMAL, jobs[0].id), [])
    assert (waiting, started) == (-1, False)
    assert normal.job_ids == [j.id for j in jobs]  # all given back, in order
    assert conn.llen(keys.claims("w1", queues.NORMAL)) == 0


def test_pool_and_rq_wide_suspensions_hold_every_queue(conn: redis.Redis) -> None:
    normal = queues.queue(conn, queues.NORMAL)
    job = normal.enqueue("tests.support.job_functions.add", 1, 1)
    workforce.suspend(conn, pool="p")
    assert workforce.suspensions(conn) == {"queues": [], "pools": ["p"], "rq_suspended": False}
    assert Claimer(conn, "p.1", "p", JSONSerializer).claim([normal], 5, None).held
    conn.set(keys.RQ_SUSPENDED, 1)  # `rq suspend`
    assert Claimer(conn, "other", "", JSONSerializer).claim([normal], 5, None).held
    assert normal.job_ids == [job.id]
    workforce.resume(conn)
    conn.delete(keys.RQ_SUSPENDED)
    assert [j.id for j, _ in Claimer(conn, "p.1", "p", JSONSerializer).claim([normal], 5, None).jobs] == [job.id]


def test_claims_of_a_dead_worker_go_back_to_the_front_of_their_queue(conn: redis.Redis) -> None:
    normal = queues.queue(conn, queues.NORMAL)
    jobs = [normal.enqueue("tests.support.job_functions.add", i, 1) for i in range(4)]
    Claimer(conn, "dead", "", JSONSerializer).claim([normal], 3, None)
    assert normal.job_ids == [jobs[3].id]
    assert requeue_orphaned_claims(conn) == 0  # its claim is still fresh
    conn.zadd(keys.CLAIMERS, {"dead": 0})  # as if it stopped renewing long ago
    assert requeue_orphaned_claims(conn) == 3
    assert normal.job_ids == [j.id for j in jobs]
    assert conn.zcard(keys.CLAIMERS) == 0


def test_suspending_an_unknown_queue_is_refused_and_stores_nothing(conn: redis.Redis, env: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match="unknown queue nope"):
        workforce.suspend(conn, ["nope"])
    result = run_cli("workers", "suspend", "--queue", "nope", env=env)
    assert result.returncode == 2 and "unknown queue nope" in result.stderr
    assert workforce.suspensions(conn)["queues"] == []


def _blocked(conn: redis.Redis) -> int:
    return int(conn.info("clients")["blocked_clients"])


@pytest.mark.parametrize("mode", [[], ["--fast"]], ids=["forking", "fast"])
def test_a_job_pushed_to_a_waiting_worker_that_is_gone_is_not_lost(
    conn: redis.Redis, env: dict[str, str], mode: list[str]
) -> None:
    """A worker waiting on several queues whose process is frozen (as when its machine is gone and the server
    still holds its connection), then killed: the job pushed meanwhile is run by another worker."""
    normal = queues.queue(conn, queues.NORMAL)
    with pool_process(env, "--processes", "1", "--queue", "normal", "--queue", "low", *mode) as gone:
        wait_until(lambda: _blocked(conn), 30, what="the worker to wait")
        [waiting] = live_children(gone)
        os.kill(waiting, signal.SIGSTOP)
        job = normal.enqueue("tests.support.job_functions.add", 1, 2)
        wait_until(lambda: _blocked(conn) == 0, 10, what="the server to answer the frozen worker's wait")
        os.kill(waiting, signal.SIGKILL)
    with pool_process(env, "--processes", "1", "--queue", "normal", "--queue", "low", *mode):
        wait_until(lambda: _status(conn, job) == JobStatus.FINISHED, 30, what="the job, run by the next worker")


def test_a_job_pushed_without_a_token_is_still_taken_by_a_waiting_worker(
    conn: redis.Redis, env: dict[str, str]
) -> None:
    """RQ's own Queue (as `rq enqueue` uses) rings no bell: a worker waiting on several queues still finds it."""
    with pool_process(env, "--processes", "1", "--queue", "normal", "--queue", "low"):
        wait_until(lambda: _blocked(conn), 30, what="the worker to wait")
        plain = Queue(queues.NORMAL, connection=conn, serializer=JSONSerializer)
        job = plain.enqueue("tests.support.job_functions.add", 1, 2)
        wait_until(lambda: _status(conn, job) == JobStatus.FINISHED, 10, what="the job")
        assert conn.llen(keys.bell(queues.NORMAL)) == 0


def test_given_back_and_resumed_jobs_ring_their_queue_bell(conn: redis.Redis) -> None:
    normal = queues.queue(conn, queues.NORMAL)
    normal.enqueue("tests.support.job_functions.add", 1, 1)
    assert conn.llen(keys.bell(queues.NORMAL)) == 1  # with the job, in its transaction
    conn.delete(keys.bell(queues.NORMAL))
    claimer = Claimer(conn, "w1", "", JSONSerializer)
    assert len(claimer.claim([normal], 5, None).jobs) == 1
    assert claimer.release([queues.NORMAL]) == 1 and conn.llen(keys.bell(queues.NORMAL)) == 1
    conn.delete(keys.bell(queues.NORMAL))
    workforce.suspend(conn, [queues.NORMAL])
    workforce.resume(conn, [queues.NORMAL])
    assert conn.llen(keys.bell(queues.NORMAL)) == 1
    conn.delete(keys.bell(queues.NORMAL))
    JSONQueue(queues.NORMAL, connection=conn).enqueue("tests.support.job_functions.add", 1, 1)  # rq-scheduler's pushes
    assert conn.llen(keys.bell(queues.NORMAL)) == 1
    for _ in range(queues.BELL_TOKENS + 10):
        normal.enqueue("tests.support.job_functions.add", 1, 1)
    assert conn.llen(keys.bell(queues.NORMAL)) == queues.BELL_TOKENS  # capped: a burst leaves no backlog
