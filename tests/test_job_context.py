"""Settings are read once per process: a worker builds its job context before it forks, and its jobs run
with it whatever the environment says by then (like arq's `ctx`)."""

from __future__ import annotations

import pytest
import redis

from jobs import queues
from jobs.config import Settings
from jobs.named import runs
from jobs.refresh.manager import SyncTaskManager
from tests.named_helpers import registry
from workers import build_worker


def test_a_named_run_uses_the_settings_its_worker_started_with(
    conn: redis.Redis, tenv: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = registry().get("t-add").delay(2, 3)
    worker = build_worker(conn, queues.ALL_QUEUES)
    # A job reading the environment now would find no task module at all and fail.
    monkeypatch.setenv("REFRESHQ_TASK_MODULES", "no.such.module")
    worker.work(burst=True, logging_level="WARNING")
    assert runs.get_result(run_id, timeout=5) == 5


def test_a_refresh_job_uses_the_settings_its_worker_started_with(
    conn: redis.Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = SyncTaskManager(settings, conn, upstream={"kind": "sample", "scale": 500})
    task_id = manager.create_province_refresh_task("北京")
    worker = build_worker(conn, [queues.REFRESH], settings=settings)
    monkeypatch.setenv("REFRESHQ_MAX_CONCURRENT_TASKS", "not a number")  # read by a job, it would fail it
    worker.work(burst=True, logging_level="WARNING")
    assert manager.get_task_status(task_id)["status"] == "SUCCEEDED"
