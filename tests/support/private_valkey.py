"""A valkey-server of a test's own (the embedded binary) on a free loopback TCP port, optionally with a
password, that the test can stop and start again on the same port and data: a Redis to lose."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType

import redis

from jobs.embedded_server import valkey_binary
from tests.support.helpers import free_port


class PrivateValkey:
    def __init__(self, directory: Path, password: str | None = None) -> None:
        self.directory = directory
        self.password = password
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, password=self.password, socket_timeout=5)

    def start(self) -> PrivateValkey:
        args = [
            str(valkey_binary()), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
            "--save", "", "--appendonly", "yes", "--logfile", str(self.directory / "valkey.log"),
        ]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 20
        while not self._answers():
            assert self.proc.poll() is None, (self.directory / "valkey.log").read_text()
            assert time.monotonic() < deadline, "the private valkey never answered"
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """An orderly shutdown (SIGTERM: the append-only file is flushed); the port is free afterwards."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=20)
        self.proc = None

    def _answers(self) -> bool:
        client = self.client()
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False
        finally:
            client.close()

    def __enter__(self) -> PrivateValkey:
        return self.start()

    def __exit__(
        self, _type: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()
