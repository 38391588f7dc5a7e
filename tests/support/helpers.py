"""Helpers shared by the tests: refreshq processes (workers, schedulers) and their work-horses, waiting on
conditions, the data a refresh published, what Redis holds, and small loopback servers."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import redis

from jobs import queues
from jobs.duties.retries import policy_of, sweep_failed_jobs
from jobs.embedded_server import EmbeddedServer
from jobs.refresh import published as store
from jobs.refresh.manager import SyncTaskManager
from jobs.refresh.records import TERMINAL
from jobs.upstream.base import Region
from jobs.upstream.sample import SampleDirectory
from jobs.upstream.serve import BackgroundServer, DirectoryHandler, RunningUpstream, start_background
from workers import build_worker

REPO = Path(__file__).resolve().parents[2]
# The console script installed next to this interpreter, exactly what a user runs.
REFRESHQ = str(Path(sys.executable).parent / "refreshq")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the installed `refreshq` entry point as a user would."""
    return subprocess.run(
        [REFRESHQ, *args],
        env=env if env is not None else dict(os.environ),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def listen_on_loopback(server: EmbeddedServer, attempts: int = 20) -> int:
    """Make a running embedded server listen on a free 127.0.0.1 port as well as on its unix socket (it
    starts with `--port 0`); return the port. CONFIG SET binds the new listener at once."""
    client = redis.Redis(unix_socket_path=str(server.socket_path))
    try:
        client.config_set("bind", "127.0.0.1")
        for _ in range(attempts):
            port = free_port()
            try:
                client.config_set("port", port)
            except redis.ResponseError:  # taken by someone else between free_port() and the bind
                continue
            return port
        raise AssertionError(f"no free loopback port for the test server in {attempts} tries")
    finally:
        client.close()


def wait_for_aof(conn: redis.Redis, timeout_ms: int = 10_000) -> None:
    """Block until every write so far is fsynced to the server's append-only file (WAITAOF): from then
    on a kill -9 of the server loses none of them."""
    local, _replicas = conn.execute_command("WAITAOF", 1, 0, timeout_ms)
    assert local == 1, f"the append-only file was not fsynced within {timeout_ms} ms"


# -- processes -------------------------------------------------------------------------------------


def drain(conn: redis.Redis, names: Iterable[str] = (queues.REFRESH,)) -> None:
    """Run a forking worker in this process until the queues are empty."""
    build_worker(conn, list(names)).work(burst=True, logging_level="WARNING")


def horse_pids(worker_pid: int) -> list[int]:
    """Children (work-horses) of a worker process."""
    try:
        with open(f"/proc/{worker_pid}/task/{worker_pid}/children") as f:
            children = f.read().split()
    except OSError:
        return []
    return [int(c) for c in children]


def work_horses(worker_pid: int) -> list[int]:
    """The children of a worker that are work-horses: those in a process group of their own (RQ's horse
    calls setpgrp). A starting worker has other children for a moment (croniter's import runs `file`,
    trio's runs `ldconfig`), which are no sign that a job runs."""
    horses = []
    for child in horse_pids(worker_pid):
        try:
            with open(f"/proc/{child}/stat") as f:
                pgrp = int(f.read().rsplit(") ", 1)[1].split()[2])
        except (OSError, IndexError, ValueError):
            continue
        if pgrp == child:
            horses.append(child)
    return horses


def alive(pid: int) -> bool:
    """Whether process `pid` runs: a zombie (dead, not yet reaped by its parent) does not."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def kill_with_horses(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a refreshq process started in a session of its own, and its work-horses: RQ puts each
    horse in a process group of its own, and one left alive runs on into the next test's database."""
    if proc.poll() is None:
        horses = horse_pids(proc.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in horses:
            with contextlib.suppress(ProcessLookupError):  # it may have died with its worker
                os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=10)


def spawn_refreshq(args: Iterable[str], env: dict[str, str], log: Path | None = None) -> subprocess.Popen[bytes]:
    """`refreshq ARGS...` in a session of its own, importing the test modules (PYTHONPATH), its output
    appended to `log` (else discarded). Stop it with `kill_with_horses`."""
    with open(log, "ab") if log is not None else contextlib.nullcontext(subprocess.DEVNULL) as out:
        return subprocess.Popen(
            [REFRESHQ, *args], env={**env, "PYTHONPATH": str(REPO)}, stdout=out,
            stderr=subprocess.STDOUT if log is not None else subprocess.DEVNULL, start_new_session=True,
        )


@contextmanager
def refreshq_process(args: Iterable[str], env: dict[str, str], log: Path | None = None) -> Iterator[
    subprocess.Popen[bytes]
]:
    """`spawn_refreshq`, killed with its work-horses if it is still running at the end."""
    proc = spawn_refreshq(args, env, log)
    try:
        yield proc
    finally:
        kill_with_horses(proc)


def worker_process(env: dict[str, str], *extra: str, log: Path | None = None) -> contextlib.AbstractContextManager[
    subprocess.Popen[bytes]
]:
    """A `refreshq worker` process on the refresh queue (or the queues in `extra`), killed at the end."""
    return refreshq_process(["worker", "--queue", "refresh", *extra], env, log)


def scheduler_running(env: dict[str, str], log: Path | None = None) -> contextlib.AbstractContextManager[
    subprocess.Popen[bytes]
]:
    """A `refreshq scheduler` process (cleans the started registries, retries, admits), killed at the end."""
    return refreshq_process(["scheduler"], env, log)


def log_lines(log: Path, needle: str) -> list[str]:
    """The lines of a process' log that contain `needle`."""
    return [line for line in log.read_text(errors="replace").splitlines() if needle in line]


# -- waiting ---------------------------------------------------------------------------------------


def wait_until(predicate: Callable[[], Any], timeout: float = 60, interval: float = 0.05, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)


def wait_status(
    manager: SyncTaskManager, task_id: str, statuses: Iterable[str], timeout: float = 120
) -> dict[str, Any]:
    wanted = set(statuses)
    return wait_until(  # type: ignore[no-any-return]
        lambda: (s := manager.get_task_status(task_id))["status"] in wanted and s, timeout, 0.05,
        f"task {task_id} to reach {wanted}",
    )


def get_when_up(url: str, timeout: float = 30, server: subprocess.Popen[Any] | None = None) -> httpx.Response:
    """The first answer of `url` once its server (if given, a process that must not exit) listens."""

    def get() -> httpx.Response | None:
        try:
            return httpx.get(url, timeout=5)
        except httpx.TransportError:
            assert server is None or server.poll() is None, f"the server of {url} exited with {server.returncode}"
            return None

    return wait_until(get, timeout, 0.1, f"{url} to answer")  # type: ignore[no-any-return]


def settle(conn: redis.Redis, manager: SyncTaskManager, task_id: str, timeout: float = 60) -> dict[str, Any]:
    """Drain the refresh queue in this process, and let the retry sweeper requeue (or bury) failed jobs,
    until the task ends: what workers and the scheduler do together, without their start-up time."""
    policy, settings = policy_of(manager.settings), manager.settings
    deadline = time.monotonic() + timeout
    while True:
        drain(conn)
        status = manager.get_task_status(task_id)
        if status["status"] in TERMINAL:
            return status
        wait_until(
            lambda: sweep_failed_jobs(conn, policy, settings) or manager.get_task_status(task_id)["status"] in TERMINAL,
            max(0.1, deadline - time.monotonic()), 0.02, f"a retry of task {task_id} to fall due",
        )


# -- data ------------------------------------------------------------------------------------------


def checksum(records: Iterable[dict[str, Any]]) -> tuple[int, str]:
    """(count, digest) of records independent of order: equal data gives equal results."""
    lines = sorted(json.dumps(r, ensure_ascii=False, sort_keys=True) for r in records)
    return len(lines), hashlib.sha256("\n".join(lines).encode()).hexdigest()


def exported(conn: redis.Redis, province: str | None = None) -> list[dict[str, Any]]:
    """The published records (of one province, or all) as `refreshq data export --format jsonl` writes them."""
    out = io.StringIO()
    store.export(conn, out, "jsonl", [province] if province else None)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def province_hospitals(directory: SampleDirectory, prefix: str) -> list[dict[str, Any]]:
    """The hospitals of the sample whose region code starts with `prefix` (e.g. "11" for 北京)."""
    return [h for h in directory.all_hospitals() if str(h["region_code"]).startswith(prefix)]


class RefusingDirectory(SampleDirectory):
    """The sample directory with some regions gone: served over HTTP, they answer 404."""

    def __init__(self, scale: int, refused: Iterable[str]) -> None:
        super().__init__(scale)
        self.refused = frozenset(refused)

    def find_region(self, code: str) -> Region | None:
        return None if code in self.refused else super().find_region(code)


# -- what Redis holds ------------------------------------------------------------------------------


def stored_keys(conn: redis.Redis) -> set[bytes]:
    """Every key, after registering the queues (every command that connects does: not a stored value)."""
    queues.register_queues(conn)
    return set(conn.keys("*"))


def inflated(data: bytes) -> bytes:
    """`data` decompressed, if it is zlib data (RQ compresses job data and tracebacks), else b""."""
    try:
        return zlib.decompress(data)
    except zlib.error:
        return b""


def key_values(conn: redis.Redis, key: bytes, names: bool = True) -> list[bytes]:
    """Every value a key holds (with `names`, a hash's and a stream's field names too)."""
    kind = conn.type(key)
    if kind == b"string":
        return [conn.get(key) or b""]
    if kind == b"hash":
        pairs = conn.hgetall(key).items()
        return [part for pair in pairs for part in pair] if names else [value for _field, value in pairs]
    if kind == b"list":
        return list(conn.lrange(key, 0, -1))
    if kind == b"set":
        return list(conn.smembers(key))
    if kind == b"zset":
        return list(conn.zrange(key, 0, -1))
    if kind == b"stream":
        pairs = [pair for _id, fields in conn.xrange(key) or [] for pair in (fields or {}).items()]
        return [part for pair in pairs for part in pair] if names else [value for _field, value in pairs]
    if kind == b"none":
        return []  # expired since the scan
    raise AssertionError(f"key {key!r} has a type this scan cannot read: {kind!r}")


def redis_keys_holding(conn: redis.Redis, needle: str) -> list[str]:
    """Every key whose name or any value (zlib-compressed ones, such as RQ's job data, inflated) holds `needle`."""
    wanted = needle.encode()
    return [
        key.decode(errors="replace") for key in conn.scan_iter(count=1000)
        if any(wanted in value or wanted in inflated(value) for value in [key, *key_values(conn, key)])
    ]


def with_credentials(url: str, user: str, password: str) -> str:
    """`url` with `user:password@` (percent-encoded) before its host, or before the socket path of unix://."""
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{quote(user, safe='')}:{quote(password, safe='')}@{rest}"


# -- loopback servers ------------------------------------------------------------------------------


@contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[ThreadingHTTPServer]:
    """A threaded HTTP server on a free loopback port, answering with `handler`; stopped at the end."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    with serving(server):
        yield server


HTTPServerT = TypeVar("HTTPServerT", bound=ThreadingHTTPServer)


@contextmanager
def serving(server: HTTPServerT) -> Iterator[HTTPServerT]:
    """`server` answering on a thread of its own until the block ends, then stopped and closed."""
    with BackgroundServer(server, poll_interval=0.05):
        yield server


Requests = list[tuple[float, str]]


@contextmanager
def recording_upstream(scale: int, latency_ms: float, **faults: float) -> Iterator[tuple[RunningUpstream, Requests]]:
    """The sample over HTTP, recording (monotonic time, path) of every request as it reaches the server."""
    requests: Requests = []

    class Recording(DirectoryHandler):
        def do_GET(self) -> None:
            requests.append((time.monotonic(), self.path))  # list.append is atomic
            super().do_GET()

    with start_background(scale, latency_ms=latency_ms, **faults) as running:  # type: ignore[arg-type]
        running.server.RequestHandlerClass = Recording  # before any request is made
        yield running, requests


class ConnectionCounter:
    """Stands in for a server on a loopback port while it is away: accepts each connection and closes it
    at once (the client sees the server drop it), counting them, so a test can wait for a client's
    reconnect attempts instead of sleeping through an outage."""

    def __init__(self, port: int) -> None:
        self._socket = socket.create_server(("127.0.0.1", port), reuse_port=False)
        self._socket.settimeout(0.05)
        self._lock = threading.Lock()
        self._count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def count(self) -> int:
        with self._lock:
            return self._count

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                client, _address = self._socket.accept()
            except TimeoutError:
                continue
            client.close()
            with self._lock:
                self._count += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._socket.close()
