"""Schedules: cron and interval fire on time (a controllable clock), pause/resume/remove/run-now, defaults,
misfires after a restart, no overlap, and exactly one enqueue per fire with two schedulers."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis
from rq.job import Job
from rq.serializers import JSONSerializer

from jobs import keys, queues
from jobs.config import Settings
from jobs.duties import fire_schedules
from jobs.errors import ScheduleNotFoundError
from jobs.named import history, schedules
from jobs.named.catalog import TaskCatalog
from jobs.named.schedules import template_job_id
from scheduler import Scheduler
from tests.support.helpers import REFRESHQ, wait_until, worker_process
from tests.support.named_helpers import drain_all, registry, trace

T0 = 1_900_000_000.0  # a fixed "now" for the controllable clock
SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.fixture
def reg(tenv: dict[str, str]) -> TaskCatalog:
    return registry()


def _add(conn: redis.Redis, reg: TaskCatalog, task: str, now: float = T0, **options: Any) -> float | None:
    return schedules.save(conn, schedules.make_schedule(reg, task, **options), reg.get(task), now)


def _runs(conn: redis.Redis, task: str, queue: str = queues.NORMAL) -> list[Job]:
    jobs = [Job.fetch(i, connection=conn, serializer=JSONSerializer) for i in queues.queue(conn, queue).job_ids]
    return [j for j in jobs if j.meta.get("task") == task]


def test_an_interval_schedule_fires_on_time(conn: redis.Redis, reg: TaskCatalog) -> None:
    assert _add(conn, reg, "t-add", interval=10, args=[1, 2]) == T0 + 10
    assert fire_schedules.tick(conn, reg, T0 + 9.9) == []
    [fired] = fire_schedules.tick(conn, reg, T0 + 10)
    assert [j.meta["fire_at"] for j in _runs(conn, "t-add")] == [T0 + 10]
    assert fire_schedules.tick(conn, reg, T0 + 10.5) == []
    drain_all(conn)
    [entry] = history.page(conn, "t-add")[1]
    assert (entry["status"], entry["trigger"], entry["job_id"]) == ("SUCCEEDED", "schedule t-add", fired.job_ids[0])
    assert fire_schedules.tick(conn, reg, T0 + 19) == []
    assert len(fire_schedules.tick(conn, reg, T0 + 20)[0].job_ids) == 1
    row = schedules.describe(conn, "t-add")
    assert (row["runs"], row["succeeded"], row["last_run_status"]) == (2, 1, "QUEUED")
    assert row["next_run"] == datetime.fromtimestamp(T0 + 30, SHANGHAI).isoformat()


def test_a_cron_schedule_fires_on_time_in_its_timezone(conn: redis.Redis, reg: TaskCatalog) -> None:
    start = datetime(2030, 1, 1, 4, 29, tzinfo=SHANGHAI).timestamp()
    assert _add(conn, reg, "t-add", now=start, cron="30 4 * * *", args=[1, 2]) == start + 60
    utc = _add(conn, reg, "t-step", now=start, cron="30 4 * * *", timezone="UTC", args=["utc"])
    assert utc == start + 8 * 3600 + 60
    assert fire_schedules.tick(conn, reg, start + 59) == []
    [fired] = fire_schedules.tick(conn, reg, start + 60)
    assert fired.name == "t-add"
    assert conn.zscore(keys.SCHEDULES_DUE, template_job_id("t-add")) == start + 60 + 86400
    assert fire_schedules.tick(conn, reg, start + 3600) == []
    assert [f.name for f in fire_schedules.tick(conn, reg, start + 8 * 3600 + 60)] == ["t-step"]


def test_pause_resume_run_now_and_remove(conn: redis.Redis, reg: TaskCatalog) -> None:
    _add(conn, reg, "t-add", interval=10, args=[1, 2])
    schedules.set_paused(conn, reg, "t-add", True, T0 + 1)
    row = schedules.describe(conn, "t-add")
    assert row["paused"] and row["next_run"] is None
    assert fire_schedules.tick(conn, reg, T0 + 10) == []
    now_run = fire_schedules.run_now(conn, reg, "t-add", T0 + 12)  # allowed while paused
    assert len(now_run.job_ids) == 1
    assert fire_schedules.run_now(conn, reg, "t-add", T0 + 12).job_ids == []  # max_instances=1: still queued
    drain_all(conn)
    assert schedules.set_paused(conn, reg, "t-add", False, T0 + 13) == T0 + 23  # from now, no catch-up
    assert fire_schedules.tick(conn, reg, T0 + 22) == []
    assert len(fire_schedules.tick(conn, reg, T0 + 23)[0].job_ids) == 1
    schedules.remove(conn, "t-add")
    assert fire_schedules.tick(conn, reg, T0 + 40) == []
    assert schedules.names(conn) == [] and not conn.exists(keys.schedule("t-add"))
    assert not conn.exists(Job.key_for(template_job_id("t-add")))
    with pytest.raises(ScheduleNotFoundError):
        schedules.remove(conn, "t-add")


def test_defaults_are_installed_without_clobbering_the_operator(conn: redis.Redis, reg: TaskCatalog) -> None:
    _add(conn, reg, "t-daily", interval=50, args=[2, 3])  # the operator's version of a task with a default
    installed = fire_schedules.start(conn, reg, T0)
    assert set(installed) == {"cleanup", "data-snapshot"}
    daily = schedules.describe(conn, "t-daily")
    assert (daily["interval"], daily["source"], daily["args"]) == (50, "operator", [2, 3])
    cleanup = schedules.describe(conn, "cleanup")
    assert (cleanup["cron"], cleanup["source"]) == ("30 3 * * *", "default")
    schedules.remove(conn, "cleanup")
    assert fire_schedules.start(conn, reg, T0 + 60) == []  # removed by the operator: stays removed
    assert "cleanup" not in schedules.names(conn)
    conn.zrem(keys.SCHEDULES_DUE, template_job_id("data-snapshot"))  # e.g. a crash between two writes
    fire_schedules.start(conn, reg, T0 + 60)
    assert conn.zscore(keys.SCHEDULES_DUE, template_job_id("data-snapshot")) is not None  # repaired


def test_two_scheduler_objects_enqueue_each_fire_once(conn: redis.Redis, reg: TaskCatalog) -> None:
    clock = [T0]

    def duty(c: redis.Redis) -> None:
        fire_schedules.run_schedules(c, now=clock[0], settings=Settings.from_env())

    _add(conn, reg, "t-add", interval=1, args=[1, 2], max_instances=100)
    first, second = Scheduler(conn, duties=[duty]), Scheduler(conn, duties=[duty])
    for i in range(1, 11):
        clock[0] = T0 + i
        first.run_once()
        second.run_once()
    assert sorted(j.meta["fire_at"] for j in _runs(conn, "t-add")) == [T0 + i for i in range(1, 11)]


def test_two_tickers_at_the_same_moment_enqueue_each_fire_once(conn: redis.Redis, reg: TaskCatalog) -> None:
    """Even two tickers that both think they are active (a stale lock holder) fire each run once."""
    _add(conn, reg, "t-add", interval=1, args=[1, 2], max_instances=100)
    clients = [redis.Redis(connection_pool=conn.connection_pool) for _ in range(2)]
    barrier = threading.Barrier(2)

    def ticker(client: redis.Redis) -> None:
        for i in range(1, 21):
            barrier.wait()
            fire_schedules.tick(client, reg, T0 + i)

    threads = [threading.Thread(target=ticker, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(j.meta["fire_at"] for j in _runs(conn, "t-add")) == [T0 + i for i in range(1, 21)]


def test_missed_runs_after_a_restart_run_once_within_grace_and_never_outside(
    conn: redis.Redis, reg: TaskCatalog
) -> None:
    clock = [T0 + 30]

    def duty(c: redis.Redis) -> None:
        fire_schedules.run_schedules(c, now=clock[0], settings=Settings.from_env())

    _add(conn, reg, "t-add", interval=60, args=[1, 2], misfire_grace_time=300)       # due T0+60, +120, ...
    _add(conn, reg, "t-step", interval=1000, args=["x"], misfire_grace_time=30)     # due T0+1000
    _add(conn, reg, "t-daily", interval=60, args=[1, 1], misfire_grace_time=150, coalesce=False, max_instances=10)
    before = Scheduler(conn, duties=[duty])
    before.run_once()
    before.lock.release()  # the scheduler stops; nothing fires while it is down
    clock[0] = T0 + 1215
    Scheduler(conn, duties=[duty]).run_once()  # a new scheduler starts 1215 s later
    [run] = _runs(conn, "t-add")
    assert run.meta["fire_at"] == T0 + 1200  # 20 fires missed, 5 within grace: coalesced into the latest
    row = schedules.describe(conn, "t-add")
    assert (row["runs"], row["missed"]) == (1, 15) and "coalesced 5" in row["last_fire"]
    assert conn.zscore(keys.SCHEDULES_DUE, template_job_id("t-add")) == T0 + 1260
    assert _runs(conn, "t-step", queues.HIGH) == []  # 215 s late, 30 s grace: skipped
    assert schedules.describe(conn, "t-step")["missed"] == 1
    assert sorted(j.meta["fire_at"] for j in _runs(conn, "t-daily")) == [T0 + 1080, T0 + 1140, T0 + 1200]


@pytest.fixture
def scheduler_processes(tenv: dict[str, str]) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def _scheduler(tenv: dict[str, str], procs: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([REFRESHQ, "scheduler"], env=tenv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(proc)
    return proc


@pytest.mark.slow
def test_two_scheduler_processes_enqueue_each_run_once(
    conn: redis.Redis, reg: TaskCatalog, tenv: dict[str, str], scheduler_processes: list[subprocess.Popen[bytes]]
) -> None:
    _add(conn, reg, "t-add", now=time.time(), interval=1, args=[1, 2], max_instances=100)
    first = _scheduler(tenv, scheduler_processes)
    wait_until(lambda: conn.get(keys.SCHEDULER_LOCK), 20, what="a scheduler to take the lock")
    second = _scheduler(tenv, scheduler_processes)
    wait_until(lambda: len(_runs(conn, "t-add")) >= 3, 20, what="three runs")
    first.send_signal(signal.SIGTERM)  # hand over to the standby
    assert first.wait(timeout=20) == 0
    count = len(_runs(conn, "t-add"))
    wait_until(lambda: len(_runs(conn, "t-add")) >= count + 2, 20, what="the standby to fire")
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=20) == 0
    fires = [j.meta["fire_at"] for j in _runs(conn, "t-add")]
    assert len(fires) == len(set(fires)) == schedules.describe(conn, "t-add")["runs"]


@pytest.mark.slow
def test_a_slow_task_on_a_short_interval_never_overlaps_itself(
    conn: redis.Redis, reg: TaskCatalog, tenv: dict[str, str], scheduler_processes: list[subprocess.Popen[bytes]]
) -> None:
    _add(conn, reg, "t-slow", now=time.time(), interval=1, args=[1.2, "s"])
    with worker_process(tenv, "--queue", "low"), worker_process(tenv, "--queue", "low"):  # two could overlap
        scheduler = _scheduler(tenv, scheduler_processes)
        wait_until(lambda: sum(t.startswith("end") for t in trace(conn)) >= 3, 30, what="three runs")
        scheduler.send_signal(signal.SIGTERM)
        assert scheduler.wait(timeout=20) == 0
        wait_until(lambda: len([t for t in trace(conn) if t.startswith("start")])
                   == len([t for t in trace(conn) if t.startswith("end")]), 20, what="the last run to end")
    starts = [float(t.split()[-1]) for t in trace(conn) if t.startswith("start")]
    ends = [float(t.split()[-1]) for t in trace(conn) if t.startswith("end")]
    assert all(start >= end for start, end in zip(starts[1:], ends, strict=False)), (starts, ends)
    assert schedules.describe(conn, "t-slow")["skipped"] >= 1


def test_a_bad_task_module_list_does_not_stop_the_scheduler(
    conn: redis.Redis, tenv: dict[str, str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A name of its own: what was reported once is not reported again in this process.
    missing = f"no_such_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("REFRESHQ_TASK_MODULES", f"{missing}.module")
    calls: list[str] = []
    settings = Settings.from_env()
    fire = lambda c: fire_schedules.run_schedules(c, settings=settings)  # noqa: E731
    scheduler = Scheduler(conn, duties=[fire, lambda c: calls.append("next duty")])
    scheduler.run_once()
    scheduler.run_once()
    assert calls == ["next duty", "next duty"]  # the other duties still run
    assert [r.message for r in caplog.records].count(
        f"schedules: cannot load the named tasks: REFRESHQ_TASK_MODULES: cannot import '{missing}.module': "
        f"No module named '{missing}'") == 1  # reported once, not every second
