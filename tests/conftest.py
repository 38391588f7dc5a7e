"""Test fixtures: one private Valkey for the session (the product's embedded server, in a temp dir), a
clean database per test, and an environment that never reaches the user's data.

The session server listens on a unix socket (what the embedded server uses) and on a loopback TCP port
(the `REDIS_URL=redis://...` of every Procfile deploy). `redis_url` -- and with it `conn`, `env` and
`settings` -- is parametrised over both, as huey runs one suite over several storages: a test that uses
the server runs once per connection kind (its id says which, e.g. `test_x[tcp]`), one that does not runs
once. Under pytest-xdist each worker process has a session, so a server, of its own.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from jobs.config import Settings
from jobs.embedded_server import EmbeddedServer
from jobs.upstream.serve import RunningUpstream, start_background
from tests.support.helpers import listen_on_loopback
from tests.support.named_helpers import named_env

CONNECTION_KINDS = ("unix", "tcp")


@pytest.fixture(autouse=True)
def forget_refused_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's memory of refused writes (jobs.reconnect.REFUSALS) starts empty in every test: a refusal
    a test met would otherwise hold back the registry maintenance of the next one run in the same process."""
    monkeypatch.setattr("jobs.reconnect.REFUSALS._last", float("-inf"))


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
    """The session's server, started as any refreshq process starts it, then also listening on TCP."""
    server = EmbeddedServer(session_dir / "valkey")
    server.ensure_running()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def valkey_urls(valkey: EmbeddedServer) -> dict[str, str]:
    """The session server's URL by connection kind."""
    return {"unix": valkey.url, "tcp": f"redis://127.0.0.1:{listen_on_loopback(valkey)}"}


@pytest.fixture(params=CONNECTION_KINDS)
def connection_kind(request: pytest.FixtureRequest) -> str:
    """How this test reaches the server: "unix" (socket) or "tcp" (loopback port)."""
    return str(request.param)


@pytest.fixture
def redis_url(connection_kind: str, valkey_urls: dict[str, str]) -> str:
    return valkey_urls[connection_kind]


@pytest.fixture
def conn(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    # A worker an earlier test killed may not have exited yet: its blocking pop, still open on the server,
    # would take this test's first job. The test starts once the server has no blocked client left.
    deadline = time.monotonic() + 10
    while client.info("clients")["blocked_clients"] and time.monotonic() < deadline:
        time.sleep(0.01)
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
def tenv(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """`env` with the test's named tasks registered (tests/support/named_task_functions.py), here and in workers."""
    return named_env(env, monkeypatch)


@pytest.fixture
def short_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory with a short path, for tests that start embedded servers of their own."""
    return Path(tmp_path_factory.mktemp("d"))


@pytest.fixture
def slow_upstream(request: pytest.FixtureRequest) -> Iterator[RunningUpstream]:
    """The sample over loopback HTTP, slow enough that a refresh over it can be caught half-way.

    Its size and latency come from the closest `upstream` mark (e.g. a module's
    `pytestmark = pytest.mark.upstream(scale=12_000, latency_ms=30)`); keyword arguments of the mark
    are those of `jobs.upstream.serve.start_background`.
    """
    mark = request.node.get_closest_marker("upstream")
    options = {"scale": 12_000, "latency_ms": 40, **(mark.kwargs if mark else {})}
    with start_background(**options) as running:
        yield running
