"""The task lifecycle through the Python API: list, filter, sort and page (also over 100,000 records),
active tasks, cleanup, the async twin, waiting, and the errors for unknown ids and bad input.

Real server, real sample or loopback HTTP upstream, real forking workers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from jobs import (
    RefreshqError,
    SyncTaskManager,
    TaskError,
    TaskManager,
    TaskNotFoundError,
    TaskTimeoutError,
    ValidationError,
    keys,
)
from jobs.config import Settings
from jobs.errors import NotFoundError
from jobs.refresh import published as store
from jobs.refresh import records
from jobs.upstream.sample import SampleDirectory
from jobs.upstream.serve import RunningUpstream, start_background
from tests.support.helpers import RefusingDirectory, checksum, drain, exported, province_hospitals, worker_process

SCALE = 2000
SAMPLE = {"kind": "sample", "scale": SCALE}

# The status dict of the reference design, and what refreshq adds to it.
REFERENCE_KEYS = {
    "task_id", "hospital_name", "query", "status", "progress", "current_step", "created_at", "updated_at",
    "result", "error_message", "statistics",
}
EXTRA_KEYS = {"started_at", "finished_at", "eta_seconds", "failed_regions"}
STATISTICS_KEYS = {"provinces_processed", "cities_processed", "districts_processed", "hospitals_found"}


@pytest.fixture
def manager(settings: Settings, conn: redis.Redis) -> SyncTaskManager:
    return SyncTaskManager(settings, conn, upstream=SAMPLE)


def province_names(count: int) -> list[str]:
    return [p["name"] for p in SampleDirectory(0).provinces()[:count]]


def ids_of(page: dict[str, Any]) -> list[str]:
    return [item["task_id"] for item in page["items"]]


def task_keys(conn: redis.Redis, task_id: str) -> list[bytes]:
    """Every refreshq key whose name carries the task id (its record, checkpoints, staging...)."""
    return sorted(conn.scan_iter(match=f"{keys.PREFIX}*{task_id}*", count=1000))


def indexed_in(conn: redis.Redis, task_id: str) -> list[bytes]:
    """The sorted sets (task indexes) that hold the task id."""
    return sorted(
        k for k in conn.scan_iter(match=f"{keys.PREFIX}tasks:*", count=1000) if conn.zscore(k, task_id) is not None
    )


# -- status dict -----------------------------------------------------------------------------------


def test_the_status_dict_has_every_key_of_the_reference_design(manager: SyncTaskManager, conn: redis.Redis) -> None:
    task_id = manager.create_province_refresh_task("北京")
    pending = manager.get_task_status(task_id)
    assert set(pending) >= REFERENCE_KEYS | EXTRA_KEYS
    assert set(pending["statistics"]) == STATISTICS_KEYS
    assert pending["task_id"] == task_id
    assert pending["hospital_name"] == "北京市"
    assert pending["query"] == "北京"
    assert pending["status"] == "PENDING"
    assert pending["progress"] == 0
    assert pending["statistics"] == dict.fromkeys(STATISTICS_KEYS, 0)
    assert pending["result"] is None and pending["error_message"] is None
    assert pending["started_at"] is None and pending["finished_at"] is None and pending["eta_seconds"] is None
    assert pending["failed_regions"] == []
    datetime.fromisoformat(pending["created_at"])
    datetime.fromisoformat(pending["updated_at"])

    drain(conn)
    done = manager.get_task_status(task_id)
    assert set(done) >= REFERENCE_KEYS | EXTRA_KEYS
    assert done["status"] == "SUCCEEDED"
    assert done["progress"] == 100
    assert isinstance(done["current_step"], str) and done["current_step"]
    expected = len(province_hospitals(SampleDirectory(SCALE), "11"))
    assert done["statistics"]["hospitals_found"] == expected
    assert done["statistics"]["provinces_processed"] == 1
    assert done["statistics"]["cities_processed"] == 1
    assert done["statistics"]["districts_processed"] == 16
    assert done["result"]["hospitals"] == expected
    assert done["error_message"] is None and done["failed_regions"] == [] and done["eta_seconds"] is None
    started, finished = datetime.fromisoformat(done["started_at"]), datetime.fromisoformat(done["finished_at"])
    assert datetime.fromisoformat(done["created_at"]) <= started <= finished


# -- list, filter, sort, page ----------------------------------------------------------------------


def test_list_filters_sorts_and_pages_25_tasks(manager: SyncTaskManager, conn: redis.Redis) -> None:
    ids = [manager.create_province_refresh_task(name) for name in province_names(25)]
    assert len(set(ids)) == 25

    newest_first = manager.list_tasks()
    assert newest_first["total"] == 25 and newest_first["page"] == 1 and newest_first["page_size"] == 10
    assert ids_of(newest_first) == ids[::-1][:10]
    assert ids_of(manager.list_tasks(page=2)) == ids[::-1][10:20]
    assert ids_of(manager.list_tasks(page=3)) == ids[::-1][20:]
    beyond = manager.list_tasks(page=4)
    assert beyond["items"] == [] and beyond["total"] == 25 and beyond["page"] == 4
    assert ids_of(manager.list_tasks(sort_order="asc", page_size=7)) == ids[:7]
    assert ids_of(manager.list_tasks(page_size=1000)) == ids[::-1]
    assert all(set(item) >= REFERENCE_KEYS | EXTRA_KEYS for item in newest_first["items"])

    # Change tasks in an order unlike their creation order, so updated_at sorts differently.
    cancelled = [ids[i] for i in (7, 2, 11, 0, 5)]
    for task_id in cancelled:
        assert manager.cancel_task(task_id) is True
    running = [ids[i] for i in (20, 13, 17)]
    for task_id in running:  # what a worker's plan job does when it starts a task
        assert records.transition(conn, task_id, ("PENDING",), "RUNNING")
    succeeded, failed = ids[22], ids[9]
    for task_id, end in ((succeeded, "SUCCEEDED"), (failed, "FAILED")):
        assert records.transition(conn, task_id, ("PENDING",), "RUNNING")
        assert records.transition(conn, task_id, ("RUNNING",), end)
    changed = {*cancelled, *running, succeeded, failed}
    pending = [t for t in ids if t not in changed]

    by_status = {
        "PENDING": pending, "RUNNING": running, "SUCCEEDED": [succeeded], "FAILED": [failed], "CANCELLED": cancelled,
    }
    for status, members in by_status.items():
        page = manager.list_tasks(status=status, page_size=100, sort_order="asc")
        assert page["total"] == len(members), status
        assert ids_of(page) == [t for t in ids if t in members], status  # creation order
        assert all(item["status"] == status for item in page["items"])
    assert sum(manager.list_tasks(status=s)["total"] for s in by_status) == 25

    assert ids_of(manager.list_tasks(status="CANCELLED", sort_by="updated_at", sort_order="asc")) == cancelled
    assert ids_of(manager.list_tasks(status="CANCELLED", sort_by="updated_at")) == cancelled[::-1]
    assert ids_of(manager.list_tasks(status="RUNNING", sort_by="updated_at", sort_order="asc")) == running
    assert ids_of(manager.list_tasks(status="CANCELLED", page=2, page_size=2, sort_by="updated_at")) == [
        cancelled[2], cancelled[1],
    ]
    # Unfiltered by updated_at: the last changed first, the never-changed ones last (in creation order).
    recent = ids_of(manager.list_tasks(sort_by="updated_at", page_size=100))
    assert recent[:2] == [failed, succeeded]
    assert recent[-len(pending):] == pending[::-1]
    assert ids_of(manager.list_tasks(sort_by="updated_at", sort_order="asc", page_size=len(pending))) == pending
    assert manager.list_tasks(status="FAILED", page=2)["items"] == []


@pytest.mark.parametrize(
    "arguments",
    [
        {"sort_by": "nope"},
        {"sort_by": "status"},
        {"sort_order": "sideways"},
        {"status": "DONE"},
        {"status": "pending"},
        {"page": 0},
        {"page_size": 0},
        {"page_size": 1001},
    ],
)
def test_bad_list_arguments_are_validation_errors(manager: SyncTaskManager, arguments: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        manager.list_tasks(**arguments)


# Clones a record written by records.add_record under new ids, into the same indexes (KEYS), with
# created_ts = base + i. ARGV: template id, first i, count, id prefix, record key prefix, base, created_at...
CLONE = """
local template = ARGV[5] .. ARGV[1]
local first, count, base = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[6])
for i = first, first + count - 1 do
  local id = string.format('%s%06d', ARGV[4], i)
  local ts = base + i
  local created = ARGV[7 + i - first]
  redis.call('COPY', template, ARGV[5] .. id)
  redis.call('HSET', ARGV[5] .. id, 'task_id', id, 'created_ts', string.format('%.6f', ts),
             'created_at', created, 'updated_at', created)
  for _, index in ipairs(KEYS) do redis.call('ZADD', index, ts, id) end
end
return count
"""
CLONE_BATCH = 10_000  # keeps each script call well under the server's busy-script threshold


@pytest.mark.slow
def test_listing_100000_tasks(manager: SyncTaskManager, conn: redis.Redis) -> None:
    total, prefix = 100_000, "task_bulk_"
    base = datetime(2025, 1, 1, tzinfo=UTC)
    last = f"{prefix}{total - 1:06d}"
    # One record written by the real helper; the others are its clones, made inside the server
    # (writing 100,000 records through redis-py's pipeline takes most of a minute on a small machine).
    template = records.new_record(last, "province", "北京市", "北京", SAMPLE)
    template["created_ts"] = repr((base + timedelta(seconds=total - 1)).timestamp())
    with conn.pipeline() as pipe:
        records.add_record(pipe, template)
        pipe.execute()
    index_keys = indexed_in(conn, last)
    assert {k.decode() for k in index_keys} >= {
        keys.TASKS_BY_CREATED, keys.TASKS_BY_UPDATED,
        keys.tasks_with_status("PENDING"), keys.tasks_with_status_by_updated("PENDING"),
    }
    created_at = [(base + timedelta(seconds=i)).isoformat(timespec="seconds") for i in range(total - 1)]
    clone_script = conn.register_script(CLONE)
    for first in range(0, total - 1, CLONE_BATCH):
        batch = created_at[first : first + CLONE_BATCH]
        clone_script(
            keys=index_keys, args=[last, first, len(batch), prefix, keys.task(""), base.timestamp(), *batch]
        )
    clone = f"{prefix}{12_345:06d}"
    assert indexed_in(conn, clone) == index_keys
    assert set(conn.hkeys(keys.task(clone))) == set(conn.hkeys(keys.task(last)))

    def bulk(i: int) -> str:
        return f"{prefix}{i:06d}"

    newest = manager.list_tasks()
    assert newest["total"] == total
    assert ids_of(newest) == [bulk(i) for i in range(total - 1, total - 11, -1)]
    assert newest["items"][1]["created_at"] == created_at[total - 2]
    assert ids_of(manager.list_tasks(page=2)) == [bulk(i) for i in range(total - 11, total - 21, -1)]
    assert ids_of(manager.list_tasks(sort_order="asc")) == [bulk(i) for i in range(10)]
    assert ids_of(manager.list_tasks(page=10_000)) == [bulk(i) for i in range(9, -1, -1)]
    assert ids_of(manager.list_tasks(page=100, page_size=1000, sort_order="asc")) == [
        bulk(i) for i in range(99_000, total)
    ]
    beyond = manager.list_tasks(page=10_001)
    assert beyond["items"] == [] and beyond["total"] == total

    started = [bulk(50_000), bulk(5), bulk(99_000)]
    for task_id in started:
        assert records.transition(conn, task_id, ("PENDING",), "RUNNING")
    assert ids_of(manager.list_tasks(status="RUNNING")) == [bulk(99_000), bulk(50_000), bulk(5)]
    assert ids_of(manager.list_tasks(sort_by="updated_at", page_size=3)) == started[::-1]
    assert ids_of(manager.list_tasks(status="RUNNING", sort_by="updated_at", sort_order="asc")) == started
    pending = manager.list_tasks(status="PENDING")
    assert pending["total"] == total - 3
    assert ids_of(pending)[:2] == [bulk(99_999), bulk(99_998)]
    assert bulk(99_000) not in ids_of(manager.list_tasks(status="PENDING", page=100, page_size=10))


# -- active tasks and cleanup ----------------------------------------------------------------------


def test_get_active_tasks_returns_the_pending_and_running_ones(manager: SyncTaskManager, conn: redis.Redis) -> None:
    pending = manager.create_province_refresh_task("北京")
    running = manager.create_province_refresh_task("天津")
    cancelled = manager.create_province_refresh_task("河北")
    assert records.transition(conn, running, ("PENDING",), "RUNNING")
    assert manager.cancel_task(cancelled)
    active = manager.get_active_tasks()
    assert {s["task_id"]: s["status"] for s in active} == {pending: "PENDING", running: "RUNNING"}
    assert all(set(s) >= REFERENCE_KEYS | EXTRA_KEYS for s in active)


@pytest.fixture
def refusing_upstream() -> Iterator[RunningUpstream]:
    """上海 with one district (黄浦区) gone: a refresh of 上海 over it ends FAILED, its staging unpublished."""
    with start_background(directory=RefusingDirectory(SCALE, {"310101"})) as running:
        yield running


def test_cleanup_removes_old_ended_tasks_and_nothing_else(
    manager: SyncTaskManager, settings: Settings, conn: redis.Redis, refusing_upstream: RunningUpstream
) -> None:
    refusing = SyncTaskManager(settings, conn, upstream={"kind": "http", "url": refusing_upstream.url})
    succeeded = manager.create_province_refresh_task("北京")
    failed = refusing.create_province_refresh_task("上海")
    drain(conn)
    assert manager.get_task_status(succeeded)["status"] == "SUCCEEDED"
    assert manager.get_task_status(failed)["status"] == "FAILED"
    assert list(conn.scan_iter(match=keys.data_version_pattern("310000", failed)))  # staged, never published
    pending = manager.create_province_refresh_task("天津")
    running = manager.create_province_refresh_task("河北")
    assert records.transition(conn, running, ("PENDING",), "RUNNING")
    cancelled = manager.create_province_refresh_task("山西")
    assert manager.cancel_task(cancelled)
    # A task that ended ten days ago.
    old = "task_20000101_000000_0ld0ld"
    record = records.new_record(old, "province", "内蒙古自治区", "内蒙古", SAMPLE)
    record["created_ts"] = repr((datetime.now(UTC) - timedelta(days=10)).timestamp())
    with conn.pipeline() as pipe:
        records.add_record(pipe, record)
        pipe.execute()
    assert records.transition(conn, old, ("PENDING",), "SUCCEEDED")
    published_before = exported(conn, "110000")
    expected_beijing = checksum(province_hospitals(SampleDirectory(SCALE), "11"))
    assert checksum(published_before) == expected_beijing

    # Refused filters delete nothing.
    for bad in (["RUNNING"], ["PENDING"], ["SUCCEEDED", "PENDING"], ["BOGUS"]):
        with pytest.raises(ValidationError):
            manager.cleanup_old_tasks(0, bad)
    with pytest.raises(ValidationError):
        manager.cleanup_old_tasks(-1)
    assert manager.list_tasks()["total"] == 6

    assert manager.cleanup_old_tasks(older_than_days=7) == 1
    assert task_keys(conn, old) == [] and indexed_in(conn, old) == []
    with pytest.raises(TaskNotFoundError):
        manager.get_task_status(old)

    assert manager.cleanup_old_tasks(older_than_days=0, status_filter=["FAILED"]) == 1
    assert task_keys(conn, failed) == []  # record, stats, checkpoints, plan and the unpublished staging
    assert indexed_in(conn, failed) == []
    assert list(conn.scan_iter(match=keys.data_version_pattern("310000", failed))) == []
    assert manager.get_task_status(succeeded)["status"] == "SUCCEEDED"

    assert manager.cleanup_old_tasks(older_than_days=0) == 2  # the succeeded and the cancelled one
    for task_id in (succeeded, cancelled):
        with pytest.raises(TaskNotFoundError):
            manager.get_task_status(task_id)
        assert indexed_in(conn, task_id) == []
        assert [k for k in task_keys(conn, task_id) if not k.startswith(f"{keys.PREFIX}data:".encode())] == []
    # The published data of a cleaned-up task stays published.
    assert conn.hget(keys.PUBLISHED, "110000") == succeeded.encode()
    assert checksum(exported(conn, "110000")) == expected_beijing
    assert conn.ttl(keys.data_leaves("110000", succeeded)) == -1
    # The active tasks are left alone.
    assert {s["task_id"] for s in manager.get_active_tasks()} == {pending, running}
    assert manager.list_tasks()["total"] == 2
    assert manager.cleanup_old_tasks(0) == 0


# -- waiting, the async twin, errors ---------------------------------------------------------------


def test_the_async_task_manager_with_a_worker(
    settings: Settings, conn: redis.Redis, env: dict[str, str]
) -> None:
    tm = TaskManager(settings, conn, upstream=SAMPLE)

    async def before_the_worker() -> str:
        never = await tm.create_province_refresh_task("天津市")
        assert (await tm.get_task_status(never))["status"] == "PENDING"
        assert await tm.cancel_task(never) is True
        assert (await tm.get_task_status(never))["status"] == "CANCELLED"
        assert await tm.cancel_task(never) is False
        return never

    async def with_the_worker(never: str) -> None:
        task_id = await tm.create_province_refresh_task("北京")
        final = await tm.wait_for_completion(task_id, timeout=90, poll_interval=0.1)
        assert final["status"] == "SUCCEEDED", final
        assert final["statistics"]["hospitals_found"] == len(province_hospitals(SampleDirectory(SCALE), "11"))
        assert await tm.cancel_task(task_id) is False
        assert await tm.get_active_tasks() == []
        listed = await tm.list_tasks()
        assert listed["total"] == 2 and [i["task_id"] for i in listed["items"]] == [task_id, never]
        assert [i["task_id"] for i in (await tm.list_tasks(status="SUCCEEDED"))["items"]] == [task_id]
        assert [i["task_id"] for i in (await tm.list_tasks(sort_by="updated_at", sort_order="asc"))["items"]] == [
            never, task_id,
        ]
        # The cancelled task never started, even with a worker on its queue.
        cancelled = await tm.get_task_status(never)
        assert cancelled["status"] == "CANCELLED" and cancelled["started_at"] is None
        assert await tm.cleanup_old_tasks(0, ["CANCELLED"]) == 1
        with pytest.raises(TaskNotFoundError):
            await tm.get_task_status(never)

    never = asyncio.run(before_the_worker())
    with worker_process(env):
        asyncio.run(with_the_worker(never))
    assert checksum(exported(conn, "110000")) == checksum(province_hospitals(SampleDirectory(SCALE), "11"))
    assert store.published_provinces(conn)["110000"]["records"] == len(exported(conn, "110000"))


def test_wait_for_completion_times_out(manager: SyncTaskManager, settings: Settings, conn: redis.Redis) -> None:
    task_id = manager.create_province_refresh_task("北京")  # no worker: it stays PENDING
    with pytest.raises(TaskTimeoutError, match="PENDING"):
        manager.wait_for_completion(task_id, timeout=0.3, poll_interval=0.05)
    with pytest.raises(TaskTimeoutError, match="PENDING"):
        asyncio.run(TaskManager(settings, conn, upstream=SAMPLE).wait_for_completion(task_id, 0.3, 0.05))
    assert manager.get_task_status(task_id)["status"] == "PENDING"


def test_unknown_task_ids_raise_task_not_found(manager: SyncTaskManager, settings: Settings, conn: redis.Redis) -> None:
    unknown = "task_20990101_000000_ffffff"
    for call in (manager.get_task_status, manager.cancel_task, manager.resume_task, manager.wait_for_completion):
        with pytest.raises(TaskNotFoundError, match=unknown):
            call(unknown)
    tm = TaskManager(settings, conn, upstream=SAMPLE)
    with pytest.raises(TaskNotFoundError):
        asyncio.run(tm.get_task_status(unknown))
    with pytest.raises(TaskNotFoundError):
        asyncio.run(tm.cancel_task(unknown))
    assert issubclass(TaskNotFoundError, NotFoundError) and issubclass(TaskError, RefreshqError)
    assert issubclass(ValidationError, RefreshqError) and issubclass(TaskTimeoutError, TaskError)
    assert conn.zcard(keys.TASKS_BY_CREATED) == 0


def test_a_page_far_beyond_the_end_is_empty(manager: SyncTaskManager) -> None:
    ids = [manager.create_province_refresh_task(name) for name in province_names(3)]
    for page in (4, 10**6, 10**20):
        beyond = manager.list_tasks(page=page)
        assert beyond["items"] == [] and beyond["total"] == 3 and beyond["page"] == page
    for status in ("PENDING", "FAILED"):
        assert manager.list_tasks(status=status, page=10**20, sort_by="updated_at")["items"] == []
    assert ids_of(manager.list_tasks(page_size=1000)) == ids[::-1]


def test_a_cleanup_age_out_of_range_is_a_validation_error(manager: SyncTaskManager) -> None:
    task_id = manager.create_province_refresh_task("北京")
    assert manager.cancel_task(task_id)
    for days in (1e6, 1e11, float("inf")):
        with pytest.raises(ValidationError):
            manager.cleanup_old_tasks(older_than_days=days)
    assert manager.get_task_status(task_id)["status"] == "CANCELLED"
