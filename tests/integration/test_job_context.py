"""Settings are read once per process: a worker builds its job context before it forks, and its jobs run
with it whatever the environment says by then (like arq's `ctx`)."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess

import pytest
import redis

from jobs import queues, shutdown
from jobs.config import Settings
from jobs.named import runs
from jobs.refresh.manager import SyncTaskManager
from tests.support.named_helpers import registry
from workers import build_worker, preload_job_modules


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


def test_a_work_horse_finds_libc_without_a_process_of_its_own() -> None:
    """The worker looks libc up before forking (preload_job_modules): a horse that looked it up itself
    would run `ldconfig -p`, a fork and an exec per job. The horse still gets its parent-death signal."""
    preload_job_modules()
    pid = os.fork()
    if pid == 0:  # the horse: any process it starts now fails the test
        code = 1
        try:
            subprocess.Popen.__init__ = _refuse  # type: ignore[method-assign]
            shutdown.die_with_parent()
            got = ctypes.c_int(0)
            shutdown.libc_prctl()(2, ctypes.byref(got), 0, 0, 0)  # PR_GET_PDEATHSIG
            code = 0 if got.value == signal.SIGKILL else 2
        finally:
            os._exit(code)
    assert os.waitpid(pid, 0)[1] == 0


def _refuse(*_args: object, **_kwargs: object) -> None:
    raise AssertionError("the work-horse started a process")
