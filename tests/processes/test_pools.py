"""`refreshq worker --processes N`: restarts, scaling through Redis (processes counted from /proc),
a wanted size that outlives the pool, drain and stop from another process."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from jobs import keys, queues, workforce
from tests.support.helpers import REFRESHQ, REPO, horse_pids, run_cli, wait_until


@contextmanager
def pool_process(env: dict[str, str], *args: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([REFRESHQ, "worker", *args], env={**env, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            children = horse_pids(proc.pid)
            os.killpg(proc.pid, signal.SIGKILL)
            for pid in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=10)


def live_children(proc: subprocess.Popen[bytes]) -> list[int]:
    """The pool's worker processes, from /proc (zombies not counted)."""
    alive = []
    for pid in horse_pids(proc.pid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def registered(conn: redis.Redis, pool: str) -> list[str]:
    """Workers of the pool in RQ's own registry (as `rq info` and the dashboard list them)."""
    return [w["name"] for w in workforce.list_workers(conn) if w["name"].startswith(pool + ".")]


def test_a_pool_of_two_restarts_a_sigkilled_worker(conn: redis.Redis, env: dict[str, str]) -> None:
    with pool_process(env, "--processes", "2", "--pool", "p", "--queue", "normal") as proc:
        first = wait_until(lambda: len(registered(conn, "p")) == 2 and live_children(proc), 30, what="2 workers")
        victim = first[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: victim not in live_children(proc) and len(live_children(proc)) == 2, 20,
                   what="a new worker in place of the killed one")
        wait_until(lambda: len(registered(conn, "p")) >= 2, 20)
        pool = workforce.list_pools(conn)[0]
        assert pool["name"] == "p" and pool["running"] == 2 and victim not in [w for w in pool["workers"]]
        assert proc.poll() is None


def test_scale_3_then_1_converges_and_a_restarted_pool_keeps_its_size(conn: redis.Redis, env: dict[str, str]) -> None:
    with pool_process(env, "--processes", "2", "--pool", "p", "--queue", "normal") as proc:
        wait_until(lambda: len(live_children(proc)) == 2, 30)
        result = run_cli("workers", "scale", "3", "--pool", "p", env=env)
        assert result.returncode == 0, result.stderr
        wait_until(lambda: len(live_children(proc)) == 3 and len(registered(conn, "p")) == 3, 30, what="3")
        assert run_cli("workers", "scale", "1", "--pool", "p", env=env).returncode == 0
        wait_until(lambda: len(live_children(proc)) == 1, 30, what="1 process")
        wait_until(lambda: len(registered(conn, "p")) == 1, 10, what="the drained ones unregistered")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    assert conn.get(keys.pool_wanted("p")) == b"1"
    with pool_process(env, "--processes", "2", "--pool", "p", "--queue", "normal") as proc:
        wait_until(lambda: workforce.list_pools(conn) and len(live_children(proc)) == 1, 30)
        with pytest.raises(AssertionError):  # and it stays at 1, not the 2 of its command line
            wait_until(lambda: len(live_children(proc)) > 1, 3)


def test_scale_down_drains_an_idle_worker_before_a_busy_one(conn: redis.Redis, env: dict[str, str]) -> None:
    with pool_process(env, "--processes", "2", "--pool", "p", "--queue", "normal") as proc:
        wait_until(lambda: len(registered(conn, "p")) == 2, 30)
        job = queues.queue(conn, queues.NORMAL).enqueue("tests.support.job_functions.nap", 4, "done")
        busy = wait_until(lambda: Job.fetch(job.id, connection=conn, serializer=JSONSerializer).worker_name, 20)
        workforce.scale(conn, "p", 1)
        wait_until(lambda: registered(conn, "p") == [busy], 20, what="only the busy worker left")
        assert Job.fetch(job.id, connection=conn, serializer=JSONSerializer).get_status() == JobStatus.STARTED
        wait_until(lambda: conn.lrange("done", 0, -1) == [job.id.encode()], 20)
        assert len(live_children(proc)) == 1


def test_drain_finishes_the_running_job_then_the_pool_exits(conn: redis.Redis, env: dict[str, str]) -> None:
    q = queues.queue(conn, queues.NORMAL)
    with pool_process(env, "--processes", "1", "--pool", "p", "--queue", "normal") as proc:
        wait_until(lambda: registered(conn, "p"), 30)
        running = q.enqueue("tests.support.job_functions.hold", "release", "done")  # ends when released
        wait_until(lambda: Job.fetch(running.id, connection=conn, serializer=JSONSerializer).worker_name, 20)
        waiting = q.enqueue("tests.support.job_functions.nap", 0, "done")
        result = run_cli("workers", "drain", "--pool", "p", env=env)
        assert result.returncode == 0 and "pool p" in result.stdout, result.stderr
        # Its worker was signalled before the pool recorded that it drains; the job ends only then (a nap
        # of 2 s could end before a slow CLI's drain arrived, and the worker took the next job).
        wait_until(lambda: conn.hget(keys.pool("p"), "state") == b"draining", 10, what="the pool draining")
        conn.rpush("release", "go")
        assert proc.wait(timeout=30) == 0
        assert conn.lrange("done", 0, -1) == [running.id.encode()]  # finished, and nothing new taken
        assert Job.fetch(running.id, connection=conn, serializer=JSONSerializer).get_status() == JobStatus.FINISHED
        assert q.job_ids == [waiting.id]
        assert registered(conn, "p") == [] and workforce.list_pools(conn) == []


def test_stop_and_drain_of_an_unknown_pool_exit_2(conn: redis.Redis, env: dict[str, str]) -> None:
    for action in ("drain", "stop"):
        result = run_cli("workers", action, "--pool", "nope", env=env)
        assert result.returncode == 2 and "no pool named 'nope' is running" in result.stderr
    result = run_cli("workers", "scale", "-1", "--pool", "p", env=env)
    assert result.returncode == 2 and conn.get(keys.pool_wanted("p")) is None


def test_workers_list_shows_pools_and_their_workers_and_stop_ends_a_pool(
    conn: redis.Redis, env: dict[str, str]
) -> None:
    with pool_process(env, "--processes", "2", "--pool", "p", "--queue", "normal", "--fast") as proc:
        wait_until(lambda: len(registered(conn, "p")) == 2 and workforce.list_pools(conn), 30)
        workforce.suspend(conn, [queues.LOW])
        result = run_cli("workers", "list", "--json", env=env)
        assert result.returncode == 0, result.stderr
        found = json.loads(result.stdout)
        (pool,) = found["pools"]
        assert (pool["name"], pool["mode"], pool["queues"], pool["wanted"], pool["running"]) == (
            "p", "fast", ["normal"], 2, 2)
        assert sorted(w["name"] for w in found["workers"]) == sorted(pool["workers"]) == sorted(registered(conn, "p"))
        assert {w["pool"] for w in found["workers"]} == {"p"}
        assert found["suspended"] == {"queues": ["low"], "pools": [], "rq_suspended": False}
        text = run_cli("workers", "list", env=env).stdout
        assert "pool p: running, 2/2 fast workers on normal" in text and "suspended queues: low" in text
        assert run_cli("workers", "stop", "--pool", "p", env=env).returncode == 0
        assert proc.wait(timeout=20) == 0
        assert registered(conn, "p") == [] and workforce.list_pools(conn) == []


def test_a_standalone_worker_drains_and_stops_through_redis(conn: redis.Redis, env: dict[str, str]) -> None:
    q = queues.queue(conn, queues.NORMAL)
    with pool_process(env, "--queue", "normal") as proc:  # one forking worker, no pool
        (name,) = wait_until(lambda: [w["name"] for w in workforce.list_workers(conn)], 30)
        running = q.enqueue("tests.support.job_functions.nap", 2, "done")
        wait_until(lambda: Job.fetch(running.id, connection=conn, serializer=JSONSerializer).worker_name, 20)
        waiting = q.enqueue("tests.support.job_functions.add", 1, 1)
        assert workforce.drain(conn, worker=name) == {"pools": [], "workers": [name]}
        assert proc.wait(timeout=30) == 0
        assert Job.fetch(running.id, connection=conn, serializer=JSONSerializer).get_status() == JobStatus.FINISHED
        assert q.job_ids == [waiting.id]
    with pool_process(env, "--queue", "normal", "--fast") as proc:
        wait_until(lambda: workforce.list_workers(conn), 30)
        result = run_cli("workers", "stop", env=env)  # every pool and worker
        assert result.returncode == 0 and "stopping: worker " in result.stdout, result.stderr
        assert proc.wait(timeout=20) == 0
        assert workforce.list_workers(conn) == []


def test_a_killed_pool_takes_its_workers_down_and_its_name_is_free_again(
    conn: redis.Redis, env: dict[str, str]
) -> None:
    with pool_process(env, "--processes", "1", "--pool", "p", "--queue", "normal") as first:
        wait_until(lambda: registered(conn, "p"), 30)
        second = run_cli("worker", "--processes", "1", "--pool", "p", "--queue", "normal", env=env, timeout=60)
        assert second.returncode == 2 and "pool 'p' is already running" in second.stderr
        (worker_pid,) = live_children(first)
        os.kill(first.pid, signal.SIGKILL)  # the pool alone: its worker gets SIGTERM from the kernel
        first.wait(timeout=10)
        wait_until(lambda: registered(conn, "p") == [] and _gone(worker_pid), 20, what="the orphaned worker gone")
    with pool_process(env, "--processes", "1", "--pool", "p", "--queue", "normal") as again:
        wait_until(lambda: len(registered(conn, "p")) == 1 and live_children(again), 40, what="the pool back")
