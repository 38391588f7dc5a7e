"""The metrics report and performance per task type: counts by status over a window, run time from each
run's start kept apart from its queue wait, the active tasks; read from indexes, sums and run lists."""

from __future__ import annotations

import json
import time

import pytest
import redis

from bench.observe_seed import FakeRun, fake_run
from jobs import keys
from jobs.config import Settings
from jobs.named import runs as named_runs
from jobs.observe import report
from jobs.refresh.manager import SyncTaskManager
from jobs.statuses import CANCELLED, FAILED, SUCCEEDED
from tests.support.helpers import drain, run_cli, wait_status
from tests.support.named_helpers import drain_all, named_env, registry

HOUR, DAY = 3600.0, 86_400.0


@pytest.fixture
def past_runs(conn: redis.Redis) -> float:
    """Ended tasks spread over ten days, one running and one pending; returns 'now'."""
    now = time.time()
    runs = [
        # ended in the last 24 h: 3 succeeded (runs 100, 200, 300 s; waits 10, 20, 30 s), 1 failed, 1 cancelled
        *(FakeRun(f"t_ok_{i}", "full", now - 2 * HOUR - w - r, now - 2 * HOUR - r, now - 2 * HOUR, SUCCEEDED,
                  hospitals=1000 * i) for i, (r, w) in enumerate([(100, 10), (200, 20), (300, 30)], 1)),
        FakeRun("t_failed", "province", now - 3 * HOUR - 50, now - 3 * HOUR - 40, now - 3 * HOUR, FAILED),
        FakeRun("t_cancelled", "full", now - 4 * HOUR, None, now - 4 * HOUR + 5, CANCELLED),
        # ended 3 days ago (7d and all only) and 9 days ago (all only)
        FakeRun("t_3d", "full", now - 3 * DAY - 1000, now - 3 * DAY - 900, now - 3 * DAY, FAILED),
        FakeRun("t_9d", "province", now - 9 * DAY - 100, now - 9 * DAY - 60, now - 9 * DAY, SUCCEEDED, hospitals=7),
        FakeRun("t_running", "full", now - 130, now - 100, None, hospitals=5000, progress=40),
        FakeRun("t_pending", "province", now - 20),
    ]
    for run in runs:
        fake_run(conn, run)
    return now


def test_counts_means_and_hospitals_follow_the_window(conn: redis.Redis, settings: Settings, past_runs: float) -> None:
    day = report.metrics_report(conn, settings, "24h")
    assert day["tasks"] == {"total": 7, "pending": 1, "running": 1, "succeeded": 3, "failed": 1, "cancelled": 1}
    assert day["success_rate"] == 75.0  # 3 of the 4 that succeeded or failed; a cancel is neither
    assert day["hospitals_found"] == 6000
    assert day["runs_timed"] == 4  # the cancelled task never started
    assert day["mean_run_seconds"] == pytest.approx((100 + 200 + 300 + 40) / 4, abs=0.01)
    assert day["mean_run_seconds_succeeded"] == pytest.approx(200, abs=0.01)
    assert day["mean_queue_wait_seconds"] == pytest.approx((10 + 20 + 30 + 10) / 4, abs=0.01)
    week = report.metrics_report(conn, settings, "7d")
    assert (week["tasks"]["failed"], week["tasks"]["succeeded"], week["runs_timed"]) == (2, 3, 5)
    everything = report.metrics_report(conn, settings, "all")
    tasks = everything["tasks"]
    assert (tasks["succeeded"], tasks["total"], everything["hospitals_found"]) == (4, 9, 6007)
    assert everything["since"] is None


def test_active_tasks_show_progress_running_time_rate_and_eta(
    conn: redis.Redis, settings: Settings, past_runs: float
) -> None:
    active = {t["task_id"]: t for t in report.metrics_report(conn, settings)["active_tasks"]}
    assert set(active) == {"t_running", "t_pending"}
    running, pending = active["t_running"], active["t_pending"]
    assert (running["status"], running["progress"], running["kind"]) == ("RUNNING", 40, "full")
    assert running["running_seconds"] == pytest.approx(100, abs=5)
    assert running["records_per_second"] == pytest.approx(50, rel=0.06)
    assert running["queue_wait_seconds"] == pytest.approx(30, abs=0.01)
    assert pending["running_seconds"] is None and pending["waiting_seconds"] == pytest.approx(20, abs=5)


def test_the_report_reads_no_task_record_of_ended_tasks(
    conn: redis.Redis, settings: Settings, past_runs: float
) -> None:
    """Deleting every ended task's record changes nothing: the report never reads them."""
    before = report.metrics_report(conn, settings, "7d")
    conn.delete(*(keys.task(t) for t in ("t_ok_1", "t_ok_2", "t_ok_3", "t_failed", "t_cancelled", "t_3d", "t_9d")))
    after = report.metrics_report(conn, settings, "7d")
    for name in ("tasks", "success_rate", "hospitals_found", "mean_run_seconds", "mean_queue_wait_seconds"):
        assert after[name] == before[name], name


def test_a_task_that_waited_in_the_queue_shows_run_time_and_wait_apart(
    conn: redis.Redis, env: dict[str, str]
) -> None:
    settings = Settings.from_env({**env, "REFRESHQ_SAMPLE_SCALE": "2000"})
    manager = SyncTaskManager(settings, conn)
    task_id = manager.create_province_refresh_task("北京")
    time.sleep(2.0)  # the wait this test is about: no worker takes the task for two seconds
    drain(conn)
    status = wait_status(manager, task_id, [SUCCEEDED], 60)
    [run] = [json.loads(r) for r in conn.lrange(keys.run_list("province"), 0, -1)]
    assert run["task_id"] == task_id and run["status"] == SUCCEEDED
    assert run["queue_wait_seconds"] >= 2.0
    assert run["run_seconds"] < run["queue_wait_seconds"]  # the sample answers at once: the wait dominates
    assert run["records"] == status["statistics"]["hospitals_found"] > 0
    perf = {row["kind"]: row for row in report.performance_report(conn, settings)["kinds"]}
    province = perf["province"]
    assert province["runs"] == 1 and province["success_rate"] == 100.0
    assert province["queue_wait_seconds_mean"] == pytest.approx(run["queue_wait_seconds"], abs=0.01)
    assert province["run_seconds"]["mean"] == pytest.approx(run["run_seconds"], abs=0.01)
    assert province["hospitals_per_second"]["best"] == pytest.approx(run["records"] / run["run_seconds"], rel=0.01)
    metrics = report.metrics_report(conn, settings)
    assert metrics["mean_queue_wait_seconds"] >= 2.0 > metrics["mean_run_seconds"]
    cli = run_cli("performance", "--json", env=env)
    assert cli.returncode == 0, cli.stderr
    assert {row["kind"]: row for row in json.loads(cli.stdout)["kinds"]}["province"]["runs"] == 1


def test_performance_covers_named_tasks_and_flags_what_the_reference_design_flags(
    conn: redis.Redis, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    named_env(env, monkeypatch)
    tasks = registry()
    for a in range(3):
        named_runs.enqueue_task(conn, tasks.get("t-add"), [a, 1], modules=tasks.modules)
    named_runs.enqueue_task(conn, tasks.get("t-fail"), ["x"], modules=tasks.modules)
    drain_all(conn)
    now = time.time()
    fake_run(conn, FakeRun("t_slow", "full", now - 5000, now - 4900, now - 100, SUCCEEDED, hospitals=10))
    data = report.performance_report(conn, Settings.from_env(env))
    rows = {row["kind"]: row for row in data["kinds"]}
    assert rows["task:t-add"]["runs"] == 3 and rows["task:t-add"]["success_rate"] == 100.0
    assert rows["task:t-add"]["hospitals_per_second"] is None  # named tasks write no records
    assert rows["task:t-fail"]["failed"] >= 1 and rows["task:t-fail"]["success_rate"] == 0.0
    assert rows["province"]["runs"] == 0 and rows["province"]["run_seconds"] is None
    found = {(i["kind"], i["type"]) for i in data["issues"]}
    assert ("task:t-fail", "low_success_rate") in found
    assert ("full", "slow_execution") in found and ("full", "low_efficiency") in found  # 4800 s, 10 records
    assert not {kind for kind, _ in found} & {"task:t-add", "province"}


def test_the_cli_prints_the_report_and_refuses_an_unknown_window(
    conn: redis.Redis, env: dict[str, str], past_runs: float
) -> None:
    data = run_cli("metrics", "--window", "7d", "--json", env=env)
    assert data.returncode == 0, data.stderr
    assert json.loads(data.stdout)["tasks"]["failed"] == 2
    text = run_cli("metrics", env=env)
    assert text.returncode == 0 and "success rate: 75.00%" in text.stdout and "t_running" in text.stdout
    bad = run_cli("metrics", "--window", "3d", env=env)
    assert bad.returncode == 2 and "3d" in bad.stderr and bad.stdout == ""
