"""Test fixtures: one private Valkey for the session (same binary as production, on a unix socket in
a temp dir), a clean database per test, and an environment that never reaches the user's data."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from jobs.config import Settings
from jobs.server import EmbeddedServer

REPO = Path(__file__).resolve().parent.parent
# The console script installed next to this interpreter, exactly what a user runs.
REFRESHQ = str(Path(sys.executable).parent / "refreshq")


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Short path: unix socket paths are limited to ~100 bytes.
    return Path(tmp_path_factory.mktemp("rq"))


@pytest.fixture(scope="session", autouse=True)
def isolated_home(session_dir: Path) -> Iterator[None]:
    """Point XDG_DATA_HOME at a temp dir so nothing can touch the user's refreshq data."""
    old = os.environ.get("XDG_DATA_HOME")
    os.environ["XDG_DATA_HOME"] = str(session_dir / "xdg")
    for name in [n for n in os.environ if n.startswith("REFRESHQ_") or n == "REDIS_URL"]:
        del os.environ[name]
    yield
    if old is None:
        os.environ.pop("XDG_DATA_HOME", None)
    else:
        os.environ["XDG_DATA_HOME"] = old


@pytest.fixture(scope="session")
def valkey(session_dir: Path) -> Iterator[EmbeddedServer]:
    server = EmbeddedServer(session_dir / "valkey")
    server.ensure_running()
    yield server
    server.stop()


@pytest.fixture
def redis_url(valkey: EmbeddedServer) -> str:
    return valkey.url


@pytest.fixture
def conn(valkey: EmbeddedServer) -> Iterator[redis.Redis]:
    client = redis.Redis(unix_socket_path=str(valkey.socket_path))
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def env(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, conn: redis.Redis) -> dict[str, str]:
    """The environment of a refreshq process pointed at the test server (also set in os.environ)."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("REFRESHQ_DATA_DIR", str(tmp_path / "data"))
    return dict(os.environ)


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    return Settings.from_env(env)


@pytest.fixture
def short_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory with a short path, for tests that start embedded servers of their own."""
    return Path(tmp_path_factory.mktemp("d"))


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
