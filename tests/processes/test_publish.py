"""Atomic publish: readers see the old or the new version of a province, never a mix, and a failed or
cancelled refresh leaves the published data untouched. Real server, loopback HTTP upstream, real workers."""

from __future__ import annotations

import json
import threading

import pytest
import redis

from jobs import keys
from jobs.config import Settings
from jobs.refresh import published as store
from jobs.refresh.manager import SyncTaskManager
from jobs.refresh.records import TERMINAL
from jobs.upstream.sample import SampleDirectory
from jobs.upstream.serve import start_background
from tests.support.helpers import (
    RefusingDirectory,
    checksum,
    drain,
    exported,
    province_hospitals,
    wait_status,
    wait_until,
    worker_process,
)

OLD_SCALE, NEW_SCALE = 4000, 6000


def publish_with_sample(settings: Settings, conn: redis.Redis, province: str, scale: int = OLD_SCALE) -> str:
    manager = SyncTaskManager(settings, conn, upstream={"kind": "sample", "scale": scale})
    task_id = manager.create_province_refresh_task(province)
    drain(conn)
    assert manager.get_task_status(task_id)["status"] == "SUCCEEDED"
    return task_id


def test_readers_see_the_old_or_the_new_version_never_a_mix(
    settings: Settings, conn: redis.Redis, env: dict[str, str], redis_url: str
) -> None:
    first = publish_with_sample(settings, conn, "广东")
    old = checksum(province_hospitals(SampleDirectory(OLD_SCALE), "44"))
    new = checksum(province_hospitals(SampleDirectory(NEW_SCALE), "44"))
    assert old != new
    assert checksum(exported(conn, "440000")) == old

    seen: list[tuple[int, str]] = []
    errors: list[BaseException] = []
    stop = threading.Event()
    reader_conn = redis.Redis.from_url(redis_url)

    def read() -> None:
        try:
            while not stop.is_set():
                seen.append(checksum(exported(reader_conn, "440000")))
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    with start_background(NEW_SCALE, latency_ms=10) as upstream:
        manager = SyncTaskManager(settings, conn, upstream={"kind": "http", "url": upstream.url})
        reader.start()
        try:
            wait_until(lambda: seen or errors, timeout=30, what="a first read")
            task_id = manager.create_province_refresh_task("广东")
            with worker_process(env):
                status = wait_status(manager, task_id, TERMINAL, timeout=120)
            after = len(seen)
            wait_until(lambda: len(seen) >= after + 3 or errors, timeout=30, what="reads after the publish")
        finally:
            stop.set()
            reader.join(timeout=30)
            reader_conn.close()
    assert not errors, errors
    assert status["status"] == "SUCCEEDED", status
    assert conn.hget(keys.PUBLISHED, "440000") == task_id.encode() != first.encode()
    mixed = [s for s in seen if s not in (old, new)]
    assert mixed == [], f"{len(mixed)} of {len(seen)} reads saw a mix of versions"
    switch = seen.index(new)
    assert switch > 0
    assert all(s == old for s in seen[:switch]) and all(s == new for s in seen[switch:])


@pytest.mark.parametrize("refused", ["110105", "110100"], ids=["a district", "a city"])
def test_a_failed_refresh_leaves_the_published_data_untouched(
    refused: str, settings: Settings, conn: redis.Redis
) -> None:
    first = publish_with_sample(settings, conn, "北京")
    before = exported(conn, "110000")
    assert checksum(before) == checksum(province_hospitals(SampleDirectory(OLD_SCALE), "11"))
    meta_before = store.published_provinces(conn)

    # 404 for one region of 北京 (and one of 上海, which was never published).
    with start_background(directory=RefusingDirectory(NEW_SCALE, {refused, "310104"})) as upstream:
        manager = SyncTaskManager(settings, conn, upstream={"kind": "http", "url": upstream.url})
        again = manager.create_province_refresh_task("北京")
        never = manager.create_province_refresh_task("上海")
        drain(conn)

    for task_id, code in ((again, refused), (never, "310104")):
        status = manager.get_task_status(task_id)
        assert status["status"] == "FAILED", status
        assert code in [r["code"] for r in status["failed_regions"]]
        assert status["error_message"]
    assert conn.hget(keys.PUBLISHED, "110000") == first.encode()
    assert store.published_provinces(conn) == meta_before
    assert checksum(exported(conn, "110000")) == checksum(before)
    assert checksum(exported(conn)) == checksum(before)  # nothing of 上海 either
    assert conn.hget(keys.PUBLISHED, "310000") is None
    # The published version is not set to expire by the failed attempt.
    assert conn.ttl(keys.data_leaves("110000", first)) == -1


def test_a_cancelled_refresh_leaves_the_published_data_untouched(
    settings: Settings, conn: redis.Redis, env: dict[str, str]
) -> None:
    first = publish_with_sample(settings, conn, "北京")
    before = checksum(exported(conn, "110000"))
    meta_before = store.published_provinces(conn)
    # One request at a time, 250 ms each: the 16 districts of 北京 take 4 s, cancelled after the first.
    with start_background(NEW_SCALE, latency_ms=250) as slow:
        manager = SyncTaskManager(settings, conn, upstream={"kind": "http", "url": slow.url})
        task_id = manager.create_province_refresh_task("北京")
        with worker_process({**env, "REFRESHQ_UPSTREAM_CONCURRENCY": "1"}):
            wait_until(
                lambda: any(p["leaves_done"] for p in manager.province_progress(task_id)),
                timeout=60, what="a first leaf staged",
            )
            assert manager.cancel_task(task_id) is True
            status = wait_status(manager, task_id, TERMINAL, timeout=30)
    assert status["status"] == "CANCELLED", status
    assert conn.hget(keys.PUBLISHED, "110000") == first.encode()
    assert store.published_provinces(conn) == meta_before
    assert checksum(exported(conn, "110000")) == before


def test_cleanup_keeps_a_replaced_version_readable_for_its_grace_period(settings: Settings, conn: redis.Redis) -> None:
    """A reader that resolved the old version before a new publish reads all of it, even if the task
    that wrote it is cleaned up meanwhile (the old version expires on its own after the grace period)."""
    first = publish_with_sample(settings, conn, "北京")
    old = province_hospitals(SampleDirectory(OLD_SCALE), "11")
    reader = store.iter_hospitals(conn, "110000")
    read = [json.loads(next(reader)[1])]  # the reader has resolved the published version: `first`
    second = publish_with_sample(settings, conn, "北京", NEW_SCALE)
    assert conn.hget(keys.PUBLISHED, "110000") == second.encode()
    assert 0 < conn.ttl(keys.data_leaves("110000", first)) <= store.OLD_VERSION_GRACE_SECONDS

    manager = SyncTaskManager(settings, conn)
    assert manager.cleanup_old_tasks(0, ["SUCCEEDED"]) == 2
    read += [json.loads(record) for _leaf, record in reader]
    assert checksum(read) == checksum(old), f"the reader got {len(read)} of the {len(old)} records it started on"
    assert checksum(exported(conn, "110000")) == checksum(province_hospitals(SampleDirectory(NEW_SCALE), "11"))
