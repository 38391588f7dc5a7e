"""The embedded server: started on demand, reused, restarted when dead, one at a time, data kept."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from jobs import queues
from jobs.config import Settings
from jobs.connection import connect
from jobs.embedded_server import EmbeddedServer
from jobs.errors import DataDirError
from tests.support.helpers import REPO, alive, run_cli, wait_for_aof, wait_until


def _settings(data_dir: Path) -> Settings:
    return Settings.from_env({"REFRESHQ_DATA_DIR": str(data_dir)})


@pytest.fixture
def embedded(short_dir: Path):  # type: ignore[no-untyped-def]
    server = EmbeddedServer(short_dir / "data")
    yield server
    server.stop()


def test_first_use_starts_a_private_server_with_owner_only_files(embedded: EmbeddedServer) -> None:
    assert not embedded.ping()
    conn = connect(_settings(embedded.data_dir))
    assert conn.ping()
    assert embedded.ping()
    assert stat.S_IMODE(embedded.data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(embedded.socket_path.stat().st_mode) & 0o077 == 0
    config = conn.config_get("append*")
    assert config["appendonly"] == "yes"
    assert config["appendfsync"] == "everysec"
    assert conn.config_get("dir")["dir"] == str(embedded.data_dir)
    # Not rewritten (a fork and the whole dataset written again) before it holds 1 GB: see jobs/embedded_server.py.
    assert conn.config_get("auto-aof-rewrite-min-size")["auto-aof-rewrite-min-size"] == str(2**30)


def test_later_processes_reuse_the_running_server(embedded: EmbeddedServer) -> None:
    connect(_settings(embedded.data_dir)).set("k", "v")
    pid = embedded.pid()
    other = connect(_settings(embedded.data_dir))
    assert embedded.pid() == pid
    assert other.get("k") == b"v"


@pytest.mark.slow
def test_stale_pid_file_after_kill_is_restarted_on_the_same_data(embedded: EmbeddedServer) -> None:
    conn = connect(_settings(embedded.data_dir))
    conn.set("survivor", "yes")
    wait_for_aof(conn)
    old_pid = embedded.pid()
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)
    _wait_dead(old_pid)
    assert embedded.pid() == old_pid  # the pid file is stale now
    fresh = connect(_settings(embedded.data_dir))
    assert fresh.get("survivor") == b"yes"
    assert embedded.pid() not in (None, old_pid)


@pytest.mark.slow
def test_a_client_heals_itself_after_the_server_is_killed(embedded: EmbeddedServer) -> None:
    conn = connect(_settings(embedded.data_dir))
    conn.rpush("queue", "job-1")
    wait_for_aof(conn)
    pid = embedded.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    _wait_dead(pid)
    assert conn.lrange("queue", 0, -1) == [b"job-1"]


def test_pid_file_of_an_unrelated_process_is_not_mistaken_for_the_server(embedded: EmbeddedServer) -> None:
    embedded.data_dir.mkdir(parents=True, mode=0o700)
    embedded.pid_path.write_text(str(os.getpid()))  # alive, but not valkey
    assert connect(_settings(embedded.data_dir)).ping()
    assert embedded.pid() != os.getpid()


def test_concurrent_starts_start_one_server(embedded: EmbeddedServer) -> None:
    code = (
        "import sys, time; from jobs.config import Settings; from jobs.connection import connect;"
        "from jobs.embedded_server import EmbeddedServer;"
        f"s = Settings.from_env({{'REFRESHQ_DATA_DIR': {str(embedded.data_dir)!r}}});"
        "connect(s).ping(); print(EmbeddedServer(s.server.data_dir).pid())"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    pids = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(pids) == 1
    assert _valkey_processes_for(embedded.data_dir) == 1


def test_data_survives_a_clean_restart(embedded: EmbeddedServer) -> None:
    conn = connect(_settings(embedded.data_dir))
    conn.hset("h", mapping={"a": "1", "b": "2"})
    conn.close()
    assert embedded.stop() is True
    assert not embedded.ping()
    assert connect(_settings(embedded.data_dir)).hgetall("h") == {b"a": b"1", b"b": b"2"}


def test_stop_when_nothing_runs(embedded: EmbeddedServer) -> None:
    assert embedded.stop() is False


def test_a_data_dir_too_long_for_a_socket_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataDirError, match="REFRESHQ_DATA_DIR is too long"):
        EmbeddedServer(tmp_path / ("x" * 120))


def test_cli_server_url_stop_and_rq_info(short_dir: Path) -> None:
    env = {**os.environ, "REFRESHQ_DATA_DIR": str(short_dir / "cli")}
    env.pop("REDIS_URL", None)
    url = run_cli("server", "url", env=env)
    assert url.returncode == 0, url.stderr
    assert url.stdout.strip() == f"unix://{short_dir / 'cli' / 'valkey.sock'}"
    rq_info = subprocess.run(
        [str(Path(sys.executable).parent / "rq"), "info", "-u", url.stdout.strip()],
        capture_output=True, text=True, timeout=60,
    )
    assert rq_info.returncode == 0, rq_info.stderr
    for name in ("refresh", "critical", "high", "normal", "low"):
        assert name in rq_info.stdout
    stopped = run_cli("server", "stop", env=env)
    assert stopped.stdout.strip() == "stopped"
    assert not EmbeddedServer(short_dir / "cli").ping()


def test_cli_server_runs_in_the_foreground_and_stops_on_sigterm(short_dir: Path) -> None:
    env = {**os.environ, "REFRESHQ_DATA_DIR": str(short_dir / "fg")}
    env.pop("REDIS_URL", None)
    proc = subprocess.Popen([str(Path(sys.executable).parent / "refreshq"), "server"], env=env)
    server = EmbeddedServer(short_dir / "fg")
    try:
        wait_until(lambda: server.ping() or proc.poll() is not None, 20, what="the foreground server to answer")
        assert proc.poll() is None
        again = run_cli("server", env=env)
        assert again.returncode == 1
        assert "already running" in again.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    assert not server.ping()


def _foreground(data_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "REFRESHQ_DATA_DIR": str(data_dir)}
    env.pop("REDIS_URL", None)
    with open(log, "wb") as out:
        # A session of its own, as a shell's job: a Ctrl-C goes to its whole process group.
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "refreshq"), "server"], env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = EmbeddedServer(data_dir)
    wait_until(lambda: server.ping() or proc.poll() is not None, 20, 0.02, "the foreground server to answer")
    assert proc.poll() is None, log.read_text()
    return proc


def test_one_ctrl_c_on_the_foreground_server_shuts_valkey_down_once_cleanly(short_dir: Path) -> None:
    log = short_dir / "fg.log"
    proc = _foreground(short_dir / "fg", log)
    server = EmbeddedServer(short_dir / "fg")
    try:
        conn = redis.Redis(unix_socket_path=str(server.socket_path))
        conn.set("kept", "yes")
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal does on Ctrl-C
        assert proc.wait(timeout=20) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        server.stop()
    text = log.read_text()
    assert text.count("Received SIGINT scheduling shutdown") == 1, text
    assert "You insist" not in text  # a second SIGINT makes valkey skip its orderly shutdown
    assert "Calling fsync() on the AOF file" in text and "ready to exit, bye bye" in text, text
    assert not server.socket_path.exists() and not server.pid_path.exists()
    again = connect(_settings(server.data_dir))  # the append-only file loads
    try:
        assert again.get("kept") == b"yes"
    finally:
        server.stop()


def test_a_hang_up_stops_the_foreground_server(short_dir: Path) -> None:
    # valkey ignores SIGHUP: forwarded as it is, a closed terminal would leave both running.
    log = short_dir / "hup.log"
    proc = _foreground(short_dir / "hup", log)
    try:
        proc.send_signal(signal.SIGHUP)
        assert proc.wait(timeout=20) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        EmbeddedServer(short_dir / "hup").stop()
    assert "ready to exit, bye bye" in log.read_text()


def test_cli_server_refuses_when_redis_url_is_set(redis_url: str, short_dir: Path) -> None:
    env = {**os.environ, "REDIS_URL": redis_url, "REFRESHQ_DATA_DIR": str(short_dir)}
    result = run_cli("server", env=env)
    assert result.returncode == 2
    assert "REDIS_URL is set" in result.stderr


def _wait_dead(pid: int) -> None:
    wait_until(lambda: not alive(pid), 10, 0.02, f"process {pid} to die")


def _valkey_processes_for(data_dir: Path) -> int:
    count = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"valkey-server" in cmdline and str(data_dir).encode() in cmdline:
            count += 1
    return count


def test_redis_module_is_real() -> None:
    # Guard against an accidental fake: the tests must talk to a real server.
    assert redis.Redis.__module__ == "redis.client"


@pytest.mark.slow
def test_info_after_a_kill_9_of_the_server_still_shows_the_queued_job(short_dir: Path) -> None:
    env = {**os.environ, "REFRESHQ_DATA_DIR": str(short_dir / "info")}
    env.pop("REDIS_URL", None)
    first = run_cli("info", env=env)
    assert first.returncode == 0, first.stderr
    assert "(embedded, data in" in first.stdout
    server = EmbeddedServer(short_dir / "info")
    conn = connect(_settings(server.data_dir))
    queues.queue(conn, queues.NORMAL).enqueue("tests.support.job_functions.add", 1, 2)
    wait_for_aof(conn)
    conn.close()
    pid = server.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    _wait_dead(pid)
    again = run_cli("info", env=env)
    try:
        assert again.returncode == 0, again.stderr
        normal = next(line for line in again.stdout.splitlines() if line.strip().startswith("normal"))
        assert normal.split()[2] == "1"  # "normal queued 1 ..."
    finally:
        server.stop()


def test_a_bad_setting_stops_a_command_naming_the_variable() -> None:
    result = run_cli("info", env={**os.environ, "REFRESHQ_MAX_CONCURRENT_TASKS": "abc"})
    assert result.returncode == 2
    assert "REFRESHQ_MAX_CONCURRENT_TASKS" in result.stderr
    assert "whole number" in result.stderr
