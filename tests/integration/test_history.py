"""Execution history: one record per attempt, newest first, bounded per task by count and by age."""

from __future__ import annotations

import json
import time

import redis

from jobs import keys
from jobs.named import history
from tests.support import named_task_functions as f
from tests.support.helpers import run_cli
from tests.support.named_helpers import drain_all, registry


def test_history_keeps_the_newest_records_up_to_the_count_limit(conn: redis.Redis) -> None:
    bounds = history.Bounds(limit=3, days=30)
    now = time.time()
    for i in range(7):
        exec_id = history.record_start(conn, "t", f"job-{i}", 1, bounds, now=now + i)
        history.record_end(conn, "t", exec_id, history.SUCCEEDED, result={"i": i}, now=now + i + 0.5)
    total, entries = history.page(conn, "t")
    assert total == 3
    assert [e["job_id"] for e in entries] == ["job-6", "job-5", "job-4"]
    assert conn.hlen(keys.history_entries("t")) == 3  # the records go with their index entries
    assert entries[0]["result"] == '{"i": 6}' and entries[0]["duration"] == 0.5


def test_history_drops_records_older_than_the_age_limit(conn: redis.Redis) -> None:
    bounds = history.Bounds(limit=100, days=1)
    now = time.time()
    history.record_start(conn, "t", "old", 1, bounds, now=now - 5 * 86400)
    history.record_start(conn, "t", "older", 1, bounds, now=now - 2 * 86400)
    assert history.page(conn, "t")[0] == 1  # writing "older" already trimmed "old"
    history.record_start(conn, "t", "new", 1, bounds, now=now)
    assert [e["job_id"] for e in history.page(conn, "t")[1]] == ["new"]
    # A task that stopped running is trimmed by age too (the cleanup task does this for every task).
    assert history.trim(conn, "t", history.Bounds(limit=100, days=1), now=now + 2 * 86400) == 1
    assert history.page(conn, "t") == (0, [])


def test_pages_and_a_record_whose_worker_died(conn: redis.Redis) -> None:
    bounds = history.Bounds()
    now = time.time()
    for i in range(5):
        history.record_end(conn, "t", history.record_start(conn, "t", f"j{i}", 1, bounds, now=now + i),
                           history.SUCCEEDED, result=i)
    assert [e["job_id"] for e in history.page(conn, "t", limit=2, offset=1)[1]] == ["j3", "j2"]
    history.record_start(conn, "t", "ghost", 1, bounds, now=now + 10)  # RUNNING, but no such job runs
    ghost = history.page(conn, "t", limit=1)[1][0]
    assert ghost["status"] == history.FAILED and ghost["error"].startswith("lost")
    stored = json.loads(conn.hget(keys.history_entries("t"), ghost["id"]) or b"{}")
    assert stored["status"] == history.FAILED


def test_real_runs_respect_the_task_limit(conn: redis.Redis, tenv: dict[str, str]) -> None:
    assert registry().get("t-flaky").history_limit == 3
    for _ in range(5):
        f.flaky.delay(0)
    drain_all(conn)
    total, entries = history.page(conn, "t-flaky")
    assert total == 3 and all(e["status"] == history.SUCCEEDED for e in entries)


def test_cli_history(conn: redis.Redis, tenv: dict[str, str]) -> None:
    f.add.delay(1, 2)
    f.fail.delay("bad")
    drain_all(conn)
    f.add.delay(3, 4)
    drain_all(conn)
    text = run_cli("tasks", "history", "t-add", env=tenv)
    assert text.returncode == 0, text.stderr
    assert "t-add: 2 attempts (showing 1-2)" in text.stdout and "SUCCEEDED" in text.stdout
    page = run_cli("tasks", "history", "t-add", "--limit", "1", "--offset", "1", "--json", env=tenv)
    data = json.loads(page.stdout)
    assert data["total"] == 2 and len(data["items"]) == 1 and data["items"][0]["result"] == "3"
    failed = json.loads(run_cli("tasks", "history", "t-fail", "--json", env=tenv).stdout)["items"][0]
    assert failed["status"] == "FAILED" and "ValueError: bad" in failed["traceback"]
