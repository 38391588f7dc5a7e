"""A Redis that refuses writes for a while -- out of memory under noeviction, a read-only replica after a
failover -- is an outage for writes only: workers and the scheduler wait (logging it), no job is failed or
buried for it, no process exits, reads go on and show why the task waits, and the refresh ends exact by
itself once writes are taken again. A command fails at once with a clear message, storing nothing."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from jobs import keys
from jobs.config import Settings
from jobs.connection import connect
from jobs.errors import WritesRefusedError
from jobs.observe import counters
from jobs.reconnect import refusal, writes_refused
from jobs.refresh.manager import SyncTaskManager
from jobs.upstream.sample import SampleDirectory
from jobs.upstream.serve import RunningUpstream
from tests.processes.test_process_lifecycle import _stop_and_time
from tests.support.helpers import (
    alive,
    checksum,
    exported,
    log_lines,
    refreshq_process,
    run_cli,
    wait_until,
    work_horses,
)
from tests.support.observe_helpers import WebhookReceiver, webhook_receiver
from tests.support.private_valkey import PrivateValkey
from web.app import create_app

pytestmark = pytest.mark.upstream(scale=6000, latency_ms=40)

SCALE = 6000
# How long writes stay refused mid-refresh: the issue's 30 s, longer than a job's heartbeat lasts (15 s) and
# an upstream lease (10 s), so both lapse meanwhile.
REFUSED_FOR = 30.0
# A read-only spell: longer than a job's heartbeat lasts too.
READ_ONLY_FOR = 20.0
STOP_WITHIN = 10.0
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PrivateValkey]:
    with PrivateValkey(tmp_path / "valkey") as private:
        yield private


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    """The alert channel: a webhook receiver on loopback."""
    with webhook_receiver() as receiver:
        yield receiver


def _env(server: PrivateValkey, tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "REDIS_URL": server.url, "REFRESHQ_DATA_DIR": str(tmp_path / "data")}


@contextmanager
def out_of_memory(client: redis.Redis) -> Iterator[None]:
    """`maxmemory` under the memory in use, with noeviction: every write that may grow the data set is refused
    (OOM) until the block ends and the limit is lifted (set at the memory in use, writes that free some
    let a few others through now and then)."""
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", max(1, int(client.info("memory")["used_memory"]) // 2))
    try:
        wait_until(lambda: writes_refused(client), 30, 0.05, "the server to refuse writes")
        yield
    finally:
        client.config_set("maxmemory", 0)


def _status(client: redis.Redis, task_id: str, env: dict[str, str]) -> dict[str, Any]:
    result = run_cli("status", task_id, "--json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def _fleet_logs(tmp_path: Path) -> list[Path]:
    return [tmp_path / "worker-1.log", tmp_path / "worker-2.log", tmp_path / "scheduler.log"]


@contextmanager
def read_only(server: PrivateValkey, standby: PrivateValkey) -> Iterator[None]:
    """`server` hands its primary role to `standby` (FAILOVER: coordinated, no acknowledged write lost) and
    serves as its read-only replica (READONLY) until the block ends, then takes the role back."""
    primary, other = server.client(), standby.client()
    primary.config_set("repl-diskless-sync-delay", 0)
    other.replicaof("127.0.0.1", server.port)
    _synced(other)
    primary.execute_command("FAILOVER", "TO", "127.0.0.1", standby.port, "TIMEOUT", 10_000)
    try:
        wait_until(lambda: writes_refused(primary), 30, 0.05, "the old primary to refuse writes")
        yield
    finally:
        _synced(primary)
        other.execute_command("FAILOVER", "TO", "127.0.0.1", server.port, "TIMEOUT", 10_000)
        wait_until(lambda: primary.info("replication")["role"] == "master", 30, 0.05, "the server to be primary")
        other.replicaof("no", "one")


def _synced(replica: redis.Redis) -> None:
    wait_until(lambda: replica.info("replication").get("master_link_status") == "up", 30, 0.02, "a replica to sync")


@dataclass(frozen=True)
class Spell:
    """A spell of refused writes: how it is brought about, the reason reads give, the health rules it
    trips, how long it lasts."""

    refusing: Callable[[], AbstractContextManager[None]]
    reason: str
    rules: frozenset[str]
    seconds: float


def _refresh_through(
    server: PrivateValkey, upstream: RunningUpstream, hook: WebhookReceiver, tmp_path: Path, spell: Spell
) -> None:
    """A full refresh with two workers and the scheduler; mid-way Redis refuses writes for a while (`spell`):
    every process waits and says so, reads and the alert say why, then the refresh ends exact by itself."""
    client, env = server.client(), {**_env(server, tmp_path), "REFRESHQ_ALERT_WEBHOOK_URL": hook.url}
    manager = SyncTaskManager(Settings.from_env(env), client, upstream={"kind": "http", "url": upstream.url})
    task_id = manager.create_full_refresh_task()
    w1, w2, sched = _fleet_logs(tmp_path)
    with refreshq_process(["worker", "--queue", "refresh"], env, w1) as one, \
            refreshq_process(["worker", "--queue", "refresh"], env, w2) as two, \
            refreshq_process(["scheduler"], env, sched) as scheduler:
        wait_until(lambda: manager.get_task_status(task_id)["progress"] >= 20, 120, 0.1, "progress >= 20%")
        with spell.refusing():
            refused_at = time.monotonic()
            for log in (w1, w2, sched):
                wait_until(lambda log=log: log_lines(log, "refuses writes"), 30, 0.1, f"{log.name} to wait")
            waiting = _status(client, task_id, env)
            assert waiting["status"] == "RUNNING" and waiting["writes_refused"]["reason"] == spell.reason, waiting
            health = run_cli("health", "--json", env=env)
            assert health.returncode == 3, health.stdout + health.stderr
            assert spell.rules <= {issue["rule"] for issue in json.loads(health.stdout)["issues"]}, health.stdout
            wait_until(lambda: _refusal_alerts(hook) == ["firing"], 25, 0.1, "the alert, sent around the outbox")
            time.sleep(max(0.0, spell.seconds - (time.monotonic() - refused_at)))  # the outage itself
            assert _status(client, task_id, env)["statistics"] == waiting["statistics"]  # nothing moved
        final = wait_until(
            lambda: (s := manager.get_task_status(task_id))["status"] in TERMINAL and s, 240, 0.2,
            "the refresh to end after writes are taken again",
        )
        wait_until(lambda: _refusal_alerts(hook) == ["firing", "resolved"], 30, 0.1, "the resolved notice")
        still_running = [p.poll() is None for p in (one, two, scheduler)]
    logs = "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}" for log in (w1, w2, sched))
    assert still_running == [True, True, True], logs
    assert final["status"] == "SUCCEEDED", (final, logs)
    assert final["statistics"]["hospitals_found"] == SCALE
    assert checksum(exported(client)) == checksum(SampleDirectory(SCALE).all_hospitals())
    assert client.zcard(keys.DEAD_LETTER) == 0
    assert client.hget(keys.METRIC_COUNTERS, counters.name(counters.RETRIES, "refresh")) is None  # none failed
    assert final["writes_refused"] is None
    for log in (w1, w2, sched):
        text = log.read_text(errors="replace")
        assert "unhandled exception" not in text, text[-4000:]
        assert log_lines(log, "takes writes again"), text[-4000:]
    recorded = [json.loads(entry) for entry in client.lrange(keys.ALERT_DELIVERIES, 0, -1)]
    assert sorted(e["status"] for e in recorded if "refused-writes" in e["notice"]) == ["firing", "resolved"]


def _refusal_alerts(hook: WebhookReceiver) -> list[str]:
    return [alert["status"] for payload in hook.payloads() for alert in payload["alerts"]
            if alert["labels"]["alertname"] == "redis_refusing_writes"]


@pytest.mark.slow
def test_a_full_redis_mid_refresh_is_waited_out_and_the_refresh_ends_exact(
    server: PrivateValkey, slow_upstream: RunningUpstream, hook: WebhookReceiver, tmp_path: Path
) -> None:
    spell = Spell(lambda: out_of_memory(server.client()), "OOM", frozenset({"redis_refusing_writes", "redis_memory"}),
                  REFUSED_FOR)
    _refresh_through(server, slow_upstream, hook, tmp_path, spell)


@pytest.mark.slow
def test_a_failover_that_leaves_the_workers_on_a_read_only_replica_is_waited_out(
    server: PrivateValkey, slow_upstream: RunningUpstream, hook: WebhookReceiver, tmp_path: Path
) -> None:
    with PrivateValkey(tmp_path / "standby") as standby:
        spell = Spell(lambda: read_only(server, standby), "READONLY", frozenset({"redis_refusing_writes"}),
                      READ_ONLY_FOR)
        _refresh_through(server, slow_upstream, hook, tmp_path, spell)


def test_a_command_fails_at_once_while_writes_are_refused_and_reads_work(
    server: PrivateValkey, tmp_path: Path
) -> None:
    client, env = server.client(), _env(server, tmp_path)
    manager = SyncTaskManager(Settings.from_env(env), client)
    pending = manager.create_province_refresh_task("北京")  # no worker: it stays PENDING
    web = create_app(Settings.from_env(env), server.url).test_client()
    with out_of_memory(client):
        before = sorted(client.keys("*"))
        started = time.monotonic()
        created = run_cli("refresh", "province", "上海", env=env)
        took = time.monotonic() - started
        posted = web.post("/api/v1/refreshes", json={"kind": "province", "province": "上海"},
                          headers={"Sec-Fetch-Site": "same-origin"})
        assert sorted(client.keys("*")) == before  # nothing stored, not half of it
        status = run_cli("status", pending, env=env)
        listed = run_cli("list", "--json", env=env)
        stats = run_cli("data", "stats", env=env)
        healthz, shown = web.get("/healthz"), web.get(f"/api/v1/refreshes/{pending}")
    assert (healthz.status_code, healthz.get_json()["writes"]) == (200, "refused (OOM)")
    assert shown.status_code == 200 and shown.get_json()["writes_refused"]["reason"] == "OOM"
    assert posted.status_code == 503 and posted.headers["Retry-After"], posted.get_data(as_text=True)
    assert "refuses writes" in posted.get_json()["detail"]
    assert created.returncode == 3, created.stdout + created.stderr  # unavailable for now: try again later
    errors = [line for line in created.stderr.splitlines() if line.startswith("refreshq: error:")]
    assert len(errors) == 1 and "Traceback" not in created.stderr, created.stderr
    assert "refuses writes" in errors[0] and "out of memory" in errors[0] and "OOM" in errors[0], errors[0]
    assert took < 5.0, f"the refused create took {took:.1f} s to fail"
    assert status.returncode == 0, status.stderr
    assert "PENDING" in status.stdout and "waiting: Redis refuses writes" in status.stdout, status.stdout
    assert listed.returncode == 0 and pending in listed.stdout, listed.stderr
    assert stats.returncode == 0, stats.stderr
    assert manager.get_task_status(pending)["writes_refused"] is None  # taken again: nothing to show


def test_a_worker_and_a_scheduler_stopped_while_writes_are_refused_exit_within_10_s(
    server: PrivateValkey, slow_upstream: RunningUpstream, tmp_path: Path
) -> None:
    client, env = server.client(), _env(server, tmp_path)
    manager = SyncTaskManager(Settings.from_env(env), client, upstream={"kind": "http", "url": slow_upstream.url})
    manager.create_province_refresh_task("广东")
    w1, _w2, sched = _fleet_logs(tmp_path)
    with refreshq_process(["worker", "--queue", "refresh"], env, w1) as worker, \
            refreshq_process(["scheduler"], env, sched) as scheduler:
        horses = wait_until(lambda: work_horses(worker.pid), 60, 0.05, "the province job to start")
        with out_of_memory(client):
            for log in (w1, sched):
                wait_until(lambda log=log: log_lines(log, "refuses writes"), 30, 0.1, f"{log.name} to wait")
            seconds = [_stop_and_time(worker), _stop_and_time(scheduler)]
    assert seconds[0] < STOP_WITHIN and seconds[1] < STOP_WITHIN, seconds
    assert worker.returncode == 0, w1.read_text()
    assert scheduler.returncode == 0, sched.read_text()
    assert not [h for h in horses if alive(h)], "the work-horse outlived its worker"
    assert "unhandled exception" not in w1.read_text()


def test_a_scheduler_stopped_while_its_start_waits_for_writes_exits_cleanly(
    server: PrivateValkey, tmp_path: Path
) -> None:
    """A stop cuts short the wait of a scheduler that started while writes were refused (its queues not yet
    registered): a clean exit, not the refusal as an error (seen in CI: exit 3)."""
    client, env = server.client(), _env(server, tmp_path)
    _w1, _w2, sched = _fleet_logs(tmp_path)
    with out_of_memory(client), refreshq_process(["scheduler"], env, sched) as scheduler:
        wait_until(lambda: log_lines(sched, "refuses writes"), 30, 0.1, "the scheduler to wait")
        seconds = _stop_and_time(scheduler)
    assert seconds < STOP_WITHIN, seconds
    assert scheduler.returncode == 0, sched.read_text()
    assert "refreshq: error" not in sched.read_text()


def test_a_waiting_client_repeats_only_what_applied_nothing_or_nothing_twice(
    server: PrivateValkey, tmp_path: Path
) -> None:
    """Under OOM some writes go through (those that free memory, a script whose first write does): a refused
    command, transaction or pipeline is sent again only if running it again cannot apply a write twice."""
    conn = connect(Settings.from_env(_env(server, tmp_path)), patient=True)
    conn.rpush("list", "a", "b")
    conn.zadd("z", {"a": 1, "b": 2})
    bump = conn.register_script("redis.call('DEL', KEYS[1] .. ':none'); return redis.call('INCR', KEYS[1])")
    store = conn.register_script("return redis.call('SET', KEYS[1], ARGV[1])")
    bump(keys=["warm"]), store(keys=["warm2"], args=[1])  # loaded before writes are refused
    results: dict[str, Any] = {}

    def waits(name: str, work: Callable[[], Any]) -> threading.Thread:
        thread = threading.Thread(target=lambda: results.__setitem__(name, work()), daemon=True)
        thread.start()
        return thread

    def pipeline(transaction: bool, *commands: Callable[[Any], Any]) -> Callable[[], Any]:
        def run() -> Any:
            with conn.pipeline(transaction=transaction) as pipe:
                for command in commands:
                    command(pipe)
                return pipe.execute()
        return run

    with out_of_memory(server.client()):
        threads = [
            waits("hincrby", lambda: conn.hincrby("counts", "n", 1)),
            waits("replace", pipeline(False, lambda p: p.delete("k"), lambda p: p.set("k", "v"),
                                      lambda p: p.expire("k", 600))),
            waits("multi", pipeline(True, lambda p: p.zrem("z", "a"), lambda p: store(keys=["s"], args=["x"],
                                                                                     client=p))),
        ]
        with pytest.raises(WritesRefusedError):  # LPOP went through, SET was refused: never LPOP again
            pipeline(False, lambda p: p.lpop("list"), lambda p: p.set("k2", "v"))()
        with pytest.raises(WritesRefusedError):  # the first script ran in the EXEC, the second was refused
            pipeline(True, lambda p: bump(keys=["bumped"], client=p), lambda p: store(keys=["s2"], args=["x"],
                                                                                    client=p))()
        time.sleep(1.0)  # the waiting ones keep waiting
        assert [t.is_alive() for t in threads] == [True, True, True], results
    for thread in threads:
        thread.join(10)
    assert not [t for t in threads if t.is_alive()], results
    # The EXEC that ZREM ran in the first time was not lost: sent again, ZREM found nothing more to remove.
    assert results["hincrby"] == 1 and results["multi"] == [0, b"OK"], results
    assert conn.get("k") == b"v" and conn.ttl("k") > 0
    assert conn.lrange("list", 0, -1) == [b"b"] and conn.get("k2") is None
    assert conn.get("bumped") == b"1" and conn.get("s2") is None
    assert conn.zrange("z", 0, -1) == [b"b"] and conn.get("s") == b"x"


@contextmanager
def unable_to_persist(server: PrivateValkey) -> Iterator[redis.Redis]:
    """A server (no append-only file) whose snapshots fail: its directory is gone, so with a save point set
    it refuses every write, PING included (MISCONF), until the operator drops the save point."""
    client = server.client()
    client.config_set("appendonly", "no")
    client.config_set("save", "3600 1")
    shutil.rmtree(server.directory)
    client.bgsave()
    try:
        wait_until(lambda: (writes_refused(client) or {}).get("reason") == "MISCONF", 30, 0.05, "MISCONF")
        yield client
    finally:
        server.directory.mkdir(parents=True, exist_ok=True)  # for its shutdown's log and snapshot
        client.config_set("save", "")


def test_a_server_that_cannot_persist_is_waited_out_too_and_commands_say_why(
    server: PrivateValkey, tmp_path: Path
) -> None:
    env = _env(server, tmp_path)
    conn = connect(Settings.from_env(env), patient=True)
    with unable_to_persist(server) as client:
        writer = threading.Thread(target=conn.set, args=("written", "once"), daemon=True)
        writer.start()
        listed = run_cli("list", env=env)  # PING is refused too: the command starts all the same
        created = run_cli("refresh", "full", env=env)
        assert writer.is_alive() and client.get("written") is None
    writer.join(15)
    assert not writer.is_alive() and client.get("written") == b"once"
    assert listed.returncode == 0, listed.stderr
    assert created.returncode == 3 and "cannot persist to disk" in created.stderr, created.stderr
    assert "MISCONF" in created.stderr


@pytest.mark.parametrize(("error", "reason"), [
    (redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), "OOM"),
    (redis.exceptions.ReadOnlyError("Command # 2 (SET b 1) of pipeline caused error: You can't write"), "READONLY"),
    (redis.exceptions.ExecAbortError("Transaction discarded because of: OOM command not allowed"), "OOM"),
    (redis.ResponseError("MISCONF Errors writing to the AOF file: No space left on device"), "MISCONF"),
    (redis.ResponseError("Command # 1 (HSET k f v) of pipeline caused error: NOREPLICAS Not enough"), "NOREPLICAS"),
    (redis.ResponseError("UNBLOCKED force unblock from blocking operation, instance state changed"), "READONLY"),
    (redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"), None),
    (redis.ResponseError("ERR user_script:3: OOM and MISCONF are only words here"), None),
    (redis.ConnectionError("Connection refused"), None),
], ids=lambda value: value if isinstance(value, str) or value is None else type(value).__name__)
def test_what_counts_as_refused_writes(error: Exception, reason: str | None) -> None:
    assert refusal(error) == reason
