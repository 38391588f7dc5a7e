"""Named tasks: registration, enqueueing (JSON only, right queue), the run wrapper, retries, hooks, time limits."""

from __future__ import annotations

import json
import zlib
from datetime import UTC, datetime

import pytest
import redis
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from jobs import keys, queues
from jobs.config import Settings
from jobs.duties import named_retries
from jobs.errors import (
    ConfigError,
    DuplicateTaskError,
    TaskArgumentsError,
    TaskExecutionError,
    TaskTimeoutError,
    UnknownTaskError,
)
from jobs.named import history, runs
from jobs.named.catalog import TaskCatalog, load_tasks
from jobs.named.definitions import Priority, definition_of
from jobs.refresh.manager import SyncTaskManager
from tests.support import named_task_functions as f
from tests.support.helpers import drain
from tests.support.named_helpers import drain_all, registry, trace


def _one() -> int:
    return 1


def _other() -> int:
    return 2


def test_duplicate_names_are_an_error_and_the_same_function_twice_is_not() -> None:
    reg = TaskCatalog()
    reg.register(definition_of(_one, "dup"))
    reg.register(definition_of(_one, "dup"))  # a module imported twice registers the same function again
    with pytest.raises(DuplicateTaskError, match="registered twice"):
        reg.register(definition_of(_other, "dup"))
    with pytest.raises(ConfigError, match="not valid"):
        reg.register(definition_of(_one, "bad name!"))
    with pytest.raises(UnknownTaskError, match="unknown task 'nope'"):
        reg.get("nope")


def test_only_the_configured_modules_are_searched() -> None:
    builtin = load_tasks(["jobs.named.builtin"])
    assert {d.name for d in builtin} == {"refresh-full", "cleanup", "data-snapshot"}
    assert "t-add" not in builtin
    both = load_tasks(["jobs.named.builtin", "tests.support.named_task_functions"])
    assert {"t-add", "cleanup"} <= {d.name for d in both}
    assert [d.name for d in both.select(category="math")] == ["t-add"]
    assert {d.name for d in both.select(tag="fast")} == {"t-add", "t-fail"}
    with pytest.raises(ConfigError, match=r"cannot import 'no\.such\.module'"):
        load_tasks(["no.such.module"])


def test_priorities_map_to_queues() -> None:
    assert [p.queue for p in Priority] == [queues.LOW, queues.NORMAL, queues.HIGH, queues.CRITICAL]


def test_delay_enqueues_a_json_job_on_the_priority_queue_and_get_result_waits(
    conn: redis.Redis, tenv: dict[str, str]
) -> None:
    task_id = f.step.delay("x")
    assert queues.queue(conn, queues.HIGH).job_ids == [task_id]
    raw = conn.hget(Job.key_for(task_id), "data")
    assert raw is not None
    assert json.loads(zlib.decompress(raw))[:1] == [runs.RUN_FUNC]  # JSON, never pickle
    with pytest.raises(TaskTimeoutError):
        f.step.get_result(task_id, timeout=0.2)
    drain_all(conn)
    assert f.step.get_result(task_id, timeout=5) == "x"
    total, entries = history.page(conn, "t-step")
    assert total == 1 and entries[0]["status"] == history.SUCCEEDED and entries[0]["result"] == '"x"'


def test_arguments_must_be_json_and_fit_the_function(conn: redis.Redis, tenv: dict[str, str]) -> None:
    with pytest.raises(TaskArgumentsError, match="JSON-serializable"):
        f.add.delay(datetime.now(UTC), 1)
    with pytest.raises(TaskArgumentsError, match="JSON-serializable"):
        f.add.delay(1, b=float("nan"))
    with pytest.raises(TaskArgumentsError, match="do not fit task t-add"):
        f.add.delay(1)
    assert not conn.keys("rq:job:*") and queues.queue(conn, queues.NORMAL).count == 0


def test_a_task_outside_the_configured_modules_is_refused(
    conn: redis.Redis, tenv: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFRESHQ_TASK_MODULES", "jobs.named.builtin")
    with pytest.raises(TaskArgumentsError, match="REFRESHQ_TASK_MODULES"):
        f.add.delay(1, 2)
    assert not conn.keys("rq:job:*")


def test_a_failure_is_recorded_with_its_traceback(conn: redis.Redis, tenv: dict[str, str]) -> None:
    task_id = f.fail.delay("kaput")
    drain_all(conn)
    with pytest.raises(TaskExecutionError, match="ValueError: kaput"):
        f.fail.get_result(task_id, timeout=5)
    _total, [entry] = history.page(conn, "t-fail")
    assert entry["status"] == history.FAILED and entry["error"] == "ValueError: kaput"
    assert "Traceback" in entry["traceback"] and "raise ValueError(message)" in entry["traceback"]
    assert entry["duration"] is not None and entry["ended_at"] is not None


def test_retries_and_hooks(conn: redis.Redis, tenv: dict[str, str]) -> None:
    task_id = f.flaky.delay(1)
    drain_all(conn)  # retry_delay=0: RQ requeues at once and the same burst runs it again
    assert f.flaky.get_result(task_id, timeout=5) == "ok on attempt 2"
    assert trace(conn) == [
        "validate", "before", "on_failure RuntimeError", "validate", "before", "after ok on attempt 2",
    ]
    _total, entries = history.page(conn, "t-flaky")
    assert [(e["attempt"], e["status"], e["retrying"]) for e in entries] == [
        (2, history.SUCCEEDED, False), (1, history.FAILED, True),
    ]


def test_a_retry_with_a_delay_is_requeued_by_the_scheduler_duty(conn: redis.Redis, tenv: dict[str, str]) -> None:
    definition = registry().get("t-flaky")
    slow_retry = definition_of(f.flaky.func, "t-flaky", retries=1, retry_delay=30)
    task_id = runs.enqueue_task(conn, slow_retry, [1], modules=Settings.from_env().server.task_modules)
    drain_all(conn)
    job = Job.fetch(task_id, connection=conn, serializer=JSONSerializer)
    assert job.get_status() == JobStatus.SCHEDULED  # parked in RQ's scheduled registry for 30 s
    assert named_retries.enqueue_due_retries(conn, now=datetime.now(UTC).timestamp() + 5) == 0
    assert named_retries.enqueue_due_retries(conn, now=datetime.now(UTC).timestamp() + 31) == 1
    drain_all(conn)
    assert definition.get_result(task_id, timeout=5) == "ok on attempt 2"


def test_the_environment_hook_can_refuse_and_the_time_limit_stops_a_run(
    conn: redis.Redis, tenv: dict[str, str]
) -> None:
    refused = f.refused.delay()
    limited = f.limited.delay()
    drain_all(conn)
    with pytest.raises(TaskExecutionError, match="TaskEnvironmentError"):
        runs.get_result(refused, timeout=5)
    with pytest.raises(TaskExecutionError, match="JobTimeoutException"):
        runs.get_result(limited, timeout=5)
    assert history.page(conn, "t-limited")[1][0]["error"].startswith("JobTimeoutException")
    assert history.page(conn, "t-refused")[1][0]["error"].startswith("TaskEnvironmentError")


def _published(conn: redis.Redis, code: str, name: str, version: str, sizes: tuple[int, ...]) -> None:
    """A published province as publishing leaves it: pointer, meta, leaves, sizes and each leaf's records."""
    conn.hset(keys.PUBLISHED, code, version)
    conn.hset(keys.PUBLISHED_META, code, json.dumps({"name": name, "records": sum(sizes), "leaves": len(sizes),
                                                      "version": version}))
    for i, size in enumerate(sizes):
        leaf = f"{code[:2]}01{i:02d}"
        conn.hset(keys.data_leaves(code, version), leaf, json.dumps({"code": leaf}))
        conn.hset(keys.data_sizes(code, version), leaf, size)
        conn.set(keys.data_leaf(code, version, leaf), "\n".join(["{}"] * size))


def test_builtin_tasks(conn: redis.Redis, tenv: dict[str, str]) -> None:
    manager = SyncTaskManager(conn=conn)
    manager.cancel_task(manager.create_full_refresh_task())
    for code, name, version, sizes in (("110000", "北京市", "v1", (4, 6)), ("120000", "天津市", "v2", (5,))):
        _published(conn, code, name, version, sizes)
    reg = registry()
    full = reg.get("refresh-full").delay()
    clean = reg.get("cleanup").delay(older_than_days=0)
    snap = reg.get("data-snapshot").delay()
    drain(conn, (queues.HIGH, queues.NORMAL, queues.LOW))  # not the refresh queue: no actual refresh runs
    started = runs.get_result(full, timeout=5)["task_id"]
    assert manager.get_task_status(started)["status"] == "PENDING"
    assert runs.get_result(clean, timeout=5)["removed_tasks"] == 1  # the cancelled one, not the pending one
    summary = runs.get_result(snap, timeout=5)
    assert (summary["provinces"], summary["records"], summary["leaves"]) == (2, 15, 3)
    stored = json.loads(conn.hget(keys.SNAPSHOTS, summary["date"]) or b"{}")
    assert stored["by_province"]["110000"]["name"] == "北京市"
