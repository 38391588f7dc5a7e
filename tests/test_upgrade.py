"""Jobs queued by the previous layout (flat `jobs/` modules) still run after an upgrade, to the same result.

RQ stores a job's function and callbacks by dotted name, rq-scheduler stores schedule templates the same
way, and deployments may still list the old built-in task module: each is enqueued here exactly as the old
code did (raw names, no new helper in between) and run by the new code.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from rq.job import Callback, Job
from rq.serializers import JSONSerializer

from jobs import keys, queues
from jobs.config import Settings
from jobs.duties import fire_schedules
from jobs.named import history, runs, schedules
from jobs.named.catalog import TaskCatalog, configured_tasks
from jobs.refresh import records
from jobs.refresh.manager import SyncTaskManager
from jobs.upstream.sample import SampleDirectory
from tests.helpers import checksum, drain, exported, province_hospitals
from tests.named_helpers import drain_all, registry

SCALE = 2000
OLD_PLAN = "jobs.refresh.plan_task"
OLD_PROVINCE = "jobs.refresh.refresh_province"
OLD_RUN = "jobs.runs.run_named_task"
OLD_FAILURE_CALLBACK = "jobs.runs.on_run_failure"
T0 = 1_900_000_000.0


@pytest.fixture
def manager(settings: Settings, conn: redis.Redis) -> SyncTaskManager:
    return SyncTaskManager(settings, conn, upstream={"kind": "sample", "scale": SCALE})


def _old_record(manager: SyncTaskManager, kind: str, label: str, provinces: list[dict[str, str]] | None) -> str:
    """A task record as the previous layout stored it (the record format did not change)."""
    task_id = records.new_task_id()
    record = records.new_record(task_id, kind, label, None, manager.upstream, manager.settings.limits.task_timeout)
    if provinces is not None:
        record["provinces"] = json.dumps(provinces, ensure_ascii=False)
    with manager.conn.pipeline() as pipe:
        pipe.multi()
        records.add_record(pipe, record)
        pipe.execute()
    return task_id


def _old_enqueue(conn: redis.Redis, queue: str, func: str, args: list[Any], job_id: str, **options: Any) -> Job:
    return queues.queue(conn, queue).enqueue_call(func, args=args, job_id=job_id, **options)


@pytest.mark.slow
def test_a_refresh_planned_by_the_old_plan_function_name_runs_to_the_same_data(
    manager: SyncTaskManager, conn: redis.Redis
) -> None:
    task_id = _old_record(manager, "full", "全量刷新", None)
    job = _old_enqueue(conn, queues.REFRESH, OLD_PLAN, [task_id], f"{task_id}-plan", timeout=7200)
    conn.sadd(keys.task_jobs(task_id), job.id)
    assert Job.fetch(job.id, connection=conn, serializer=JSONSerializer).func_name == OLD_PLAN
    drain(conn)
    status = manager.get_task_status(task_id)
    assert status["status"] == "SUCCEEDED", status
    assert status["statistics"]["hospitals_found"] == SCALE
    assert checksum(exported(conn)) == checksum(SampleDirectory(SCALE).all_hospitals())
    # The same refresh under the new names gives the same data.
    again = manager.create_full_refresh_task()
    drain(conn)
    assert manager.get_task_status(again)["status"] == "SUCCEEDED"
    assert checksum(exported(conn)) == checksum(SampleDirectory(SCALE).all_hospitals())


def test_a_province_job_queued_under_the_old_name_runs_and_ends_its_task(
    manager: SyncTaskManager, conn: redis.Redis
) -> None:
    beijing = {"code": "110000", "name": "北京市", "level": "province"}
    task_id = _old_record(manager, "province", "北京市", [beijing])
    # What the old plan job had done before the upgrade: counted the province, enqueued its job.
    conn.hset(keys.task_stats(task_id), "provinces_total", 1)
    job = _old_enqueue(conn, queues.REFRESH, OLD_PROVINCE, [task_id, "110000"], f"{task_id}-p110000-1", timeout=7200)
    conn.sadd(keys.task_jobs(task_id), job.id)
    drain(conn)
    status = manager.get_task_status(task_id)
    assert status["status"] == "SUCCEEDED", status
    assert checksum(exported(conn, "110000")) == checksum(province_hospitals(SampleDirectory(SCALE), "11"))


def test_a_named_run_queued_under_the_old_name_runs_to_the_same_result(conn: redis.Redis, tenv: dict[str, str]) -> None:
    old = _old_enqueue(conn, queues.NORMAL, OLD_RUN, ["t-add", [2, 3], {}], "t-add-old-1",
                       meta={"task": "t-add", "attempt": 0}, on_failure=Callback(OLD_FAILURE_CALLBACK))
    new = registry().get("t-add").delay(2, 3)
    drain_all(conn)
    assert runs.get_result(old.id, timeout=5) == runs.get_result(new, timeout=5) == 5
    _total, entries = history.page(conn, "t-add")
    assert sorted(e["job_id"] for e in entries if e["status"] == history.SUCCEEDED) == sorted([old.id, new])


def test_the_old_failure_callback_still_ends_a_scheduled_run(conn: redis.Redis, tenv: dict[str, str]) -> None:
    reg = registry()
    schedules.save(conn, schedules.make_schedule(reg, "t-fail", interval=3600), reg.get("t-fail"), T0)
    old = _old_enqueue(conn, queues.NORMAL, OLD_RUN, ["t-fail", ["old"], {}], "t-fail-old-1",
                       meta={"task": "t-fail", "attempt": 0, "schedule": "t-fail"},
                       on_failure=Callback(OLD_FAILURE_CALLBACK))
    conn.hset(keys.schedule("t-fail"), mapping={"last_job_id": old.id, "last_run_status": ""})
    conn.sadd(keys.schedule_runs("t-fail"), old.id)
    drain_all(conn)
    row = schedules.describe(conn, "t-fail")
    assert (row["last_run_status"], row["failed"]) == ("FAILED", 1)
    assert row["last_run_error"].startswith("ValueError: old")


def _store_old_template(conn: redis.Redis, reg: TaskCatalog, name: str, due: float) -> None:
    """The rq-scheduler template as the previous layout wrote it: its function under the old name."""
    schedule = schedules.load(conn, name)
    definition = reg.get(schedule.task)
    schedules.rq_scheduler(conn).schedule(
        datetime.fromtimestamp(due, UTC), OLD_RUN, args=[schedule.task, schedule.args, schedule.kwargs],
        id=schedules.template_job_id(name), queue_name=definition.queue, timeout=definition.time_limit,
        result_ttl=runs.RESULT_TTL, description=f"schedule {name}: task {schedule.task}",
        meta={"schedule": name, "trigger": schedule.trigger.describe()},
    )


def test_a_schedule_template_stored_the_old_way_still_fires(conn: redis.Redis, tenv: dict[str, str]) -> None:
    reg = registry()
    schedules.save(conn, schedules.make_schedule(reg, "t-add", interval=10, args=[1, 2]), reg.get("t-add"), T0)
    _store_old_template(conn, reg, "t-add", T0 + 10)
    template = Job.fetch(schedules.template_job_id("t-add"), connection=conn, serializer=JSONSerializer)
    assert template.func_name == OLD_RUN
    [fired] = fire_schedules.tick(conn, reg, T0 + 10)
    drain_all(conn)
    assert runs.get_result(fired.job_ids[0], timeout=5) == 3
    [entry] = history.page(conn, "t-add")[1]
    assert (entry["status"], entry["trigger"]) == (history.SUCCEEDED, "schedule t-add")
    assert schedules.describe(conn, "t-add")["last_run_status"] == history.SUCCEEDED


def test_the_old_builtin_task_module_name_still_loads_and_runs_the_builtin_tasks(
    conn: redis.Redis, tenv: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFRESHQ_TASK_MODULES", "jobs.builtin_tasks")
    tasks = configured_tasks(Settings.from_env())
    assert {d.name for d in tasks} == {"refresh-full", "cleanup", "data-snapshot"}
    run_id = tasks.get("data-snapshot").delay()  # accepted: the workers (same setting) find it
    drain(conn, (queues.NORMAL,))
    assert runs.get_result(run_id, timeout=5)["provinces"] == 0
