"""Long-running processes (worker, scheduler, web) and a lost Redis: they wait for it with a log line
now and then, carry on when it is back, and exit within 10 s of a SIGTERM whether it is back or not."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from jobs import keys, queues
from tests.support.helpers import (
    ConnectionCounter,
    alive,
    free_port,
    log_lines,
    refreshq_process,
    run_cli,
    wait_until,
    work_horses,
)
from tests.support.private_valkey import PrivateValkey

STOP_WITHIN = 10.0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PrivateValkey]:
    with PrivateValkey(tmp_path / "valkey") as private:
        yield private


def _env(server: PrivateValkey, tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "REDIS_URL": server.url, "REFRESHQ_DATA_DIR": str(tmp_path / "data")}


def _stop_and_time(proc: subprocess.Popen[bytes]) -> float:
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        raise AssertionError("still running 30 s after SIGTERM") from None
    return time.monotonic() - started


def _lose_the_server(server: PrivateValkey, log: Path, ready: Callable[[], object], what: str) -> None:
    """Once `ready`, stop the server and wait for the process to log that it lost it."""
    wait_until(ready, 60, 0.05, what)
    server.stop()
    wait_until(lambda: log_lines(log, "unreachable"), 30, 0.05, "the process to notice the outage")


def _registered(server: PrivateValkey) -> Callable[[], object]:
    return lambda: server.client().smembers("rq:workers")


def _active(server: PrivateValkey) -> Callable[[], object]:
    return lambda: server.client().exists(keys.SCHEDULER_HEARTBEAT)


def test_an_idle_worker_sigtermed_while_its_server_is_down_exits_within_10_s(
    server: PrivateValkey, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    with refreshq_process(["worker"], _env(server, tmp_path), log) as proc:
        _lose_the_server(server, log, _registered(server), "the worker to register")
        seconds = _stop_and_time(proc)
    assert proc.returncode == 0, log.read_text()
    assert seconds < STOP_WITHIN, f"exited {seconds:.1f} s after SIGTERM"
    assert "warm shut down requested" in log.read_text()


@pytest.mark.slow
def test_a_busy_worker_sigtermed_while_its_server_is_down_exits_without_leaving_its_horse(
    server: PrivateValkey, tmp_path: Path
) -> None:
    job = queues.queue(server.client(), queues.NORMAL).enqueue("time.sleep", 120)  # ignores the warm shutdown
    log = tmp_path / "worker.log"
    with refreshq_process(["worker"], _env(server, tmp_path), log) as proc:
        horses = wait_until(lambda: work_horses(proc.pid), 60, 0.05, "the job to start")
        _lose_the_server(server, log, lambda: True, "")
        seconds = _stop_and_time(proc)
    assert seconds < STOP_WITHIN, f"exited {seconds:.1f} s after SIGTERM"
    assert proc.returncode == 0, log.read_text()
    assert not [h for h in horses if alive(h)], "the work-horse outlived its worker"
    assert f"job {job.id} is left to crash recovery" in log.read_text()


def test_a_scheduler_sigtermed_while_its_server_is_down_exits_within_10_s(
    server: PrivateValkey, tmp_path: Path
) -> None:
    log = tmp_path / "scheduler.log"
    with refreshq_process(["scheduler"], _env(server, tmp_path), log) as proc:
        _lose_the_server(server, log, _active(server), "the scheduler to be active")
        seconds = _stop_and_time(proc)
    assert proc.returncode == 0, log.read_text()
    assert seconds < STOP_WITHIN, f"exited {seconds:.1f} s after SIGTERM"
    assert "scheduler: stopped" in log.read_text()


def test_web_sigtermed_while_its_server_is_down_exits_within_10_s(server: PrivateValkey, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "web.log"
    with refreshq_process(["web", "--port", str(port)], _env(server, tmp_path), log) as proc:
        wait_until(lambda: log_lines(log, "dashboard on"), 60, 0.05, "the web process to listen")
        server.stop()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:  # a request in flight
            client.sendall(b"GET /rq/0/data/queues.json HTTP/1.0\r\n\r\n")
            seconds = _stop_and_time(proc)
    assert proc.returncode == 0, log.read_text()
    assert seconds < STOP_WITHIN, f"exited {seconds:.1f} s after SIGTERM"


# Reconnect attempts the outage tests wait for after the first "unreachable" line: a line per attempt
# would show (the clients back off to one attempt every 2 s).
ATTEMPTS_IN_OUTAGE = 4


@contextmanager
def outage_with_attempts(server: PrivateValkey, attempts: int = ATTEMPTS_IN_OUTAGE) -> Iterator[None]:
    """While the (stopped) server is away, count the connections its clients try on its port; return once
    `attempts` of them came after the process logged the outage, and start the server again on exit."""
    counter = ConnectionCounter(server.port)
    try:
        wait_until(lambda: counter.count >= attempts, 60, 0.05, f"{attempts} reconnect attempts")
        yield
    finally:
        counter.close()
        server.start()


@pytest.mark.slow
def test_a_worker_rides_out_an_outage_logging_it_once_and_works_when_the_server_is_back(
    server: PrivateValkey, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    with refreshq_process(["worker", "--queue", "normal"], _env(server, tmp_path), log) as proc:
        _lose_the_server(server, log, _registered(server), "the worker to register")
        with outage_with_attempts(server):
            assert proc.poll() is None, log.read_text()
        job = queues.queue(server.client(), queues.NORMAL).enqueue("tests.support.job_functions.add", 2, 3)
        wait_until(
            lambda: Job.fetch(job.id, connection=server.client(), serializer=JSONSerializer).get_status()
            == JobStatus.FINISHED,
            60, 0.1, "the job enqueued after the outage to finish",
        )
        assert len(log_lines(log, "unreachable")) == 1, log.read_text()
        wait_until(lambda: log_lines(log, "is back after"), 30, 0.05, "the worker to log the end of the outage")
        assert "could not connect to Redis instance" not in log.read_text()  # RQ's line per attempt
        assert _stop_and_time(proc) < STOP_WITHIN
    assert proc.returncode == 0
    assert server.client().smembers("rq:workers") == set()


@pytest.mark.slow
def test_a_scheduler_rides_out_an_outage_and_is_active_again(server: PrivateValkey, tmp_path: Path) -> None:
    log = tmp_path / "scheduler.log"
    with refreshq_process(["scheduler"], _env(server, tmp_path), log) as proc:
        _lose_the_server(server, log, _active(server), "the scheduler to be active")
        with outage_with_attempts(server):
            assert proc.poll() is None, log.read_text()
        server.client().delete(keys.SCHEDULER_HEARTBEAT)
        wait_until(_active(server), 30, 0.05, "a tick after the outage")
        assert len(log_lines(log, "unreachable")) == 1, log.read_text()
        assert not log_lines(log, "Redis unavailable"), log.read_text()  # no line per tick
        assert _stop_and_time(proc) < STOP_WITHIN
    assert proc.returncode == 0


def _worker_registered(conn: redis.Redis) -> bool:
    return bool(conn.keys("rq:worker:*"))


@pytest.mark.parametrize("attempt", range(4))
def test_a_worker_sigtermed_as_it_registers_stops_cleanly(
    attempt: int, conn: redis.Redis, env: dict[str, str], tmp_path: Path
) -> None:
    # The worst moment: registered in Redis, RQ's signal handlers not yet installed (it used to die of
    # the signal, rc -15, and stay listed).
    log = tmp_path / "worker.log"
    with refreshq_process(["worker"], env, log) as proc:
        wait_until(lambda: _worker_registered(conn), 60, 0.001, "the worker to register")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=STOP_WITHIN) == 0, log.read_text()
    assert conn.smembers("rq:workers") == set()


@pytest.mark.parametrize("delay", [0.3, 0.6, 0.9, 1.2])
@pytest.mark.slow
def test_a_worker_sigtermed_while_starting_leaves_nothing_registered(
    delay: float, conn: redis.Redis, env: dict[str, str], tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    with refreshq_process(["worker"], env, log) as proc:
        time.sleep(delay)  # somewhere in its start-up: imports, connecting, preloading, registering
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=STOP_WITHIN)
    # Before refreshq's first handler (the interpreter still importing) the signal kills it, which is
    # harmless: nothing is visible yet. From then on it is a clean stop.
    assert code in (0, -signal.SIGTERM), log.read_text()
    assert conn.smembers("rq:workers") == set()
    assert not [k for k in conn.keys("rq:worker:*") if not conn.hexists(k, "death")]


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_web_on_a_port_in_use_is_a_clear_error(taken_port: int, env: dict[str, str]) -> None:
    result = run_cli("web", "--port", str(taken_port), env=env)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"refreshq: error: cannot listen on 127.0.0.1:{taken_port}: Address already in use" in result.stderr


def test_upstream_serve_on_a_port_in_use_is_a_clear_error(taken_port: int) -> None:
    result = run_cli("upstream", "serve", "--port", str(taken_port), "--scale", "10")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"refreshq: error: cannot listen on 127.0.0.1:{taken_port}: Address already in use" in result.stderr
