"""The bench's private world: a temp dir, an embedded server, and subprocesses on loopback.

Everything the suite starts is registered here and stopped on the way out, whether the run ends
normally, fails, or is interrupted (Ctrl-C, SIGTERM). Children run in their own sessions so a
stop can take a worker's work-horses down with it, and never reach the user's data directory or
any REDIS_URL the caller has set: their environment is rebuilt from scratch for the temp dir.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import redis
from rq import Worker

from jobs.config import ServerSettings, Settings
from jobs.embedded_server import EmbeddedServer

REPO = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
# A warm stop lets a worker finish its current job; past this it is killed with its horses.
STOP_GRACE_SECONDS = 15.0


def console_script(name: str, module: str) -> list[str]:
    """The console script installed next to this interpreter (what a user runs), else `python -m`."""
    script = Path(sys.executable).parent / name
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", module]


REFRESHQ = console_script("refreshq", "cli")
RQ = console_script("rq", "rq.cli")


def free_port() -> int:
    """A free loopback port (the upstream is retried on another one if it loses the race)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


class Bench:
    """A temp dir holding a private Valkey, plus every subprocess the scenarios start."""

    def __init__(self) -> None:
        # Short prefix: the server's unix socket path must stay under ~100 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="rqbench-"))
        self.logs = self.root / "logs"
        self.logs.mkdir()
        self.server = EmbeddedServer(self.root / "data")
        self.url = self.server.ensure_running()
        self.conn = redis.Redis(unix_socket_path=str(self.server.socket_path))
        self._procs: list[subprocess.Popen[bytes]] = []

    # -- environment ---------------------------------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a child: the caller's, minus anything pointing at real data."""
        env = {k: v for k, v in os.environ.items() if not (k.startswith("REFRESHQ_") or k == "REDIS_URL")}
        env.update(
            REDIS_URL=self.url,
            REFRESHQ_DATA_DIR=str(self.root / "data-client"),
            XDG_DATA_HOME=str(self.root / "xdg"),
            PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
        )
        env.update(extra)
        return env

    def settings(self, **groups: Any) -> Settings:
        """Settings of the bench's own in-process clients (same server, temp data dir); `groups` replace
        the defaults' (e.g. limits=LimitSettings(max_pending=...))."""
        server = ServerSettings(redis_url=self.url, data_dir=self.root / "data-client")
        return dataclasses.replace(Settings(server=server), **groups)

    def flush(self) -> None:
        """Start a scenario from an empty server (no workers may be running).

        SYNC: Valkey frees a FLUSHALL in the background by default, and memory figures taken right
        after it would still include what is being freed.
        """
        self.conn.execute_command("FLUSHALL", "SYNC")  # type: ignore[no-untyped-call]

    # -- processes -----------------------------------------------------------------------------

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start a child in its own session with its output in logs/<name>.log."""
        with open(self.logs / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                args, env=env if env is not None else self.env(), cwd=REPO, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self._procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM the process itself (an RQ worker's warm shutdown), then kill its whole group."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace)
        _kill_group(proc)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        if proc in self._procs:
            self._procs.remove(proc)

    def start_workers(
        self, count: int, queue: str, concurrency: int, name: str = "worker", extra: list[str] | None = None
    ) -> list[subprocess.Popen[bytes]]:
        """`count` refreshq workers on `queue`, returned once all are registered with the server."""
        env = self.env(REFRESHQ_UPSTREAM_CONCURRENCY=str(concurrency))
        before = Worker.count(connection=self.conn)
        procs = [
            self.spawn(f"{name}-{i + 1}", [*REFRESHQ, "worker", "--queue", queue, *(extra or [])], env)
            for i in range(count)
        ]
        self.wait_for(lambda: Worker.count(connection=self.conn) >= before + count, 60, f"{count} workers",
                      procs)
        return procs

    def wait_for(
        self, predicate: Any, timeout: float, what: str, procs: list[subprocess.Popen[bytes]] | None = None
    ) -> None:
        """Wait for `predicate()`; fail early (naming the log) if one of `procs` dies meanwhile."""
        deadline = time.monotonic() + timeout
        while not predicate():
            for proc in procs or []:
                if proc.poll() is not None:
                    raise RuntimeError(f"a child exited ({proc.returncode}) while waiting for {what}; see {self.logs}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}; see {self.logs}")
            time.sleep(0.05)

    # -- the upstream --------------------------------------------------------------------------

    def start_upstream(self, scale: int, latency_ms: float, id_format: str = "coded") -> Upstream:
        """`refreshq upstream serve` in its own process, so its GIL is not the bench's."""
        for attempt in range(3):
            port = free_port()
            proc = self.spawn(f"upstream-{id_format}-{attempt}", [
                *REFRESHQ, "upstream", "serve", "--host", LOOPBACK, "--port", str(port),
                "--scale", str(scale), "--latency-ms", f"{latency_ms:g}", "--id-format", id_format,
            ])
            upstream = Upstream(f"http://{LOOPBACK}:{port}/v1", proc)
            if upstream.wait_ready(60):
                return upstream
            upstream.close()
            self.stop(proc, grace=2)
        raise RuntimeError(f"the upstream did not start; see {self.logs}")

    # -- teardown ------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every child and the server, then remove the temp dir (keeping it if asked)."""
        for proc in list(self._procs):
            _kill_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + 3
        for proc in list(self._procs):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            _kill_group(proc)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self._procs.clear()
        self.conn.close()
        with contextlib.suppress(Exception):
            self.server.stop()
        if not os.environ.get("REFRESHQ_BENCH_KEEP"):
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Bench:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    # The child leads its own session, so its pid is its group id; horses live in that group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


class Upstream:
    """The upstream subprocess and a keep-alive client for its /_stats counters."""

    def __init__(self, url: str, proc: subprocess.Popen[bytes]) -> None:
        self.url = url
        self.proc = proc
        self._client = httpx.Client(timeout=10.0)

    def stats(self) -> dict[str, Any]:
        response = self._client.get(f"{self.url}/_stats")
        response.raise_for_status()
        stats: dict[str, Any] = response.json()
        return stats

    def total(self) -> int:
        return int(self.stats()["total"])

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                self.stats()
                return True
            except httpx.HTTPError:
                time.sleep(0.1)
        return False

    def close(self) -> None:
        self._client.close()


def stats_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Upstream requests made between two /_stats snapshots, in total and by kind."""
    kinds = set(before["by_kind"]) | set(after["by_kind"])
    return {
        "total": after["total"] - before["total"],
        "by_kind": {k: after["by_kind"].get(k, 0) - before["by_kind"].get(k, 0) for k in sorted(kinds)},
        "max_in_flight": after["max_in_flight"],
    }
