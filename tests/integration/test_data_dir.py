"""REFRESHQ_DATA_DIR that cannot hold the embedded server: a message naming the cause, exit 2, nothing
created; a relative one is resolved against the directory the command starts in."""

from __future__ import annotations

import array
import contextlib
import fcntl
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.config import Settings
from jobs.embedded_server import EmbeddedServer
from jobs.errors import DataDirError
from tests.support.helpers import REFRESHQ, run_cli

_FS_IOC_GETFLAGS = 0x80086601
_FS_IOC_SETFLAGS = 0x40086602
_FS_IMMUTABLE_FL = 0x10


def _env(data_dir: str) -> dict[str, str]:
    env = {**os.environ, "REFRESHQ_DATA_DIR": data_dir}
    env.pop("REDIS_URL", None)
    return env


def _set_immutable(path: Path, on: bool) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        flags = array.array("i", [0])
        fcntl.ioctl(fd, _FS_IOC_GETFLAGS, flags, True)
        flags[0] = flags[0] | _FS_IMMUTABLE_FL if on else flags[0] & ~_FS_IMMUTABLE_FL
        fcntl.ioctl(fd, _FS_IOC_SETFLAGS, flags, True)
    finally:
        os.close(fd)


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """A directory this process cannot write: mode 0500, and for root (whom modes do not stop) the
    immutable attribute as well."""
    path.mkdir(mode=0o700)
    os.chmod(path, 0o500)
    if os.geteuid() == 0:
        _set_immutable(path, True)
    try:
        yield
    finally:
        if os.geteuid() == 0:
            _set_immutable(path, False)
        os.chmod(path, 0o700)


@pytest.mark.parametrize("args", [("list",), ("info",), ("server", "url"), ("worker",), ("scheduler",)], ids=" ".join)
def test_a_read_only_data_dir_is_a_clear_error(args: tuple[str, ...], short_dir: Path) -> None:
    data = short_dir / "ro"
    with read_only(data):
        result = run_cli(*args, env=_env(str(data)))
        assert list(data.iterdir()) == []
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"refreshq: error: REFRESHQ_DATA_DIR={data} is not writable" in result.stderr
    assert not EmbeddedServer(data).ping()


def test_a_read_only_data_dir_keeps_its_mode(short_dir: Path) -> None:
    # refreshq makes a data directory private but never grants itself the write access its owner removed.
    data = short_dir / "ro"
    with read_only(data):
        run_cli("list", env=_env(str(data)))
        assert oct(data.stat().st_mode & 0o777) == oct(0o500)


@pytest.mark.parametrize("args", [("list",), ("worker",), ("demo", "--scale", "10")], ids=" ".join)
def test_a_file_where_the_data_dir_should_be_is_a_clear_error(args: tuple[str, ...], short_dir: Path) -> None:
    data = short_dir / "file"
    data.write_text("not a directory")
    result = run_cli(*args, env=_env(str(data)))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"refreshq: error: REFRESHQ_DATA_DIR={data} is not a directory" in result.stderr
    assert data.read_text() == "not a directory"


def test_a_file_on_the_data_dir_path_is_a_clear_error(short_dir: Path) -> None:
    (short_dir / "file").write_text("x")
    data = short_dir / "file" / "data"
    result = run_cli("list", env=_env(str(data)))
    assert result.returncode == 2, result.stderr
    assert f"refreshq: error: cannot create REFRESHQ_DATA_DIR={data}: Not a directory" in result.stderr


def test_a_relative_data_dir_is_resolved_against_the_working_directory(short_dir: Path) -> None:
    env = _env("rel/data")

    def refreshq(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([REFRESHQ, *args], env=env, cwd=short_dir, capture_output=True, text=True, timeout=60)

    try:
        info = refreshq("info")
        assert info.returncode == 0, info.stderr
        assert f"unix://{short_dir}/rel/data/valkey.sock (embedded, data in {short_dir}/rel/data)" in info.stdout
        assert EmbeddedServer(short_dir / "rel" / "data").ping()
        assert refreshq("server", "stop").stdout.strip() == "stopped"
    finally:
        EmbeddedServer(short_dir / "rel" / "data").stop()
    assert Settings.from_env({"REFRESHQ_DATA_DIR": "rel/data"}).server.data_dir == Path.cwd() / "rel" / "data"


def test_a_data_dir_too_long_for_a_socket_exits_2(short_dir: Path) -> None:
    data = short_dir / ("x" * 120)
    with pytest.raises(DataDirError, match="REFRESHQ_DATA_DIR is too long"):
        EmbeddedServer(data)
    result = run_cli("list", env=_env(str(data)))
    assert result.returncode == 2
    assert "REFRESHQ_DATA_DIR is too long for a unix socket" in result.stderr


@pytest.mark.slow
def test_valkey_failing_to_start_says_why(short_dir: Path) -> None:
    # A data directory valkey cannot use although refreshq can: its AOF manifest is garbage.
    data = short_dir / "bad"
    (data / "appendonlydir").mkdir(parents=True, mode=0o700)
    (data / "appendonlydir" / "appendonly.aof.manifest").write_text("garbage\n")
    result = run_cli("list", env=_env(str(data)))
    assert result.returncode == 3, result.stderr  # the server is unavailable
    assert "Traceback" not in result.stderr
    line = next(x for x in result.stderr.splitlines() if x.startswith("refreshq: error:"))
    assert "valkey-server" in line and "manifest" in line.lower(), line
