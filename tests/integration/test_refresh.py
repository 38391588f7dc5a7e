"""Full and province refreshes end to end: real server, real HTTP upstream on loopback, real workers."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis

from jobs import keys
from jobs.config import Settings
from jobs.refresh import published as store
from jobs.refresh.manager import SyncTaskManager
from jobs.upstream.sample import SampleDirectory
from jobs.upstream.serve import RunningUpstream, start_background
from tests.support.helpers import checksum, drain, exported, province_hospitals

SCALE = 6000


@pytest.fixture
def upstream() -> Iterator[RunningUpstream]:
    with start_background(SCALE) as running:
        yield running


@pytest.fixture
def manager(settings: Settings, conn: redis.Redis, upstream: RunningUpstream) -> SyncTaskManager:
    return SyncTaskManager(settings, conn, upstream={"kind": "http", "url": upstream.url})


@pytest.mark.slow
def test_full_refresh_over_http_publishes_exactly_the_upstream(manager: SyncTaskManager, conn: redis.Redis) -> None:
    task_id = manager.create_full_refresh_task()
    assert manager.get_task_status(task_id)["status"] == "PENDING"
    drain(conn)
    status = manager.get_task_status(task_id)
    assert status["status"] == "SUCCEEDED", status
    assert status["progress"] == 100
    assert status["hospital_name"] == "全量刷新"
    assert status["statistics"]["provinces_processed"] == 34
    assert status["statistics"]["hospitals_found"] == SCALE
    assert status["result"]["hospitals"] == SCALE
    assert status["started_at"] and status["finished_at"]
    assert checksum(exported(conn)) == checksum(SampleDirectory(SCALE).all_hospitals())


def test_province_refresh_touches_only_that_province(manager: SyncTaskManager, conn: redis.Redis) -> None:
    task_id = manager.create_province_refresh_task("广东")
    drain(conn)
    status = manager.get_task_status(task_id)
    assert status["status"] == "SUCCEEDED"
    assert status["hospital_name"] == "广东省"
    assert status["query"] == "广东"
    assert list(store.published_provinces(conn)) == ["440000"]
    assert checksum(exported(conn, "440000")) == checksum(province_hospitals(SampleDirectory(SCALE), "44"))


def test_progress_is_mirrored_into_job_meta_as_json(manager: SyncTaskManager, conn: redis.Redis) -> None:
    task_id = manager.create_province_refresh_task("440000")
    drain(conn)
    job_ids = [j.decode() for j in conn.smembers(keys.task_jobs(task_id))]
    from rq.job import Job
    from rq.serializers import JSONSerializer

    metas = [Job.fetch(j, connection=conn, serializer=JSONSerializer).meta for j in job_ids]
    mirrored = [m["refreshq"] for m in metas if "refreshq" in m]
    assert mirrored and mirrored[0]["task_id"] == task_id
    assert 0 < mirrored[0]["progress"] <= 100
    json.dumps(mirrored)  # JSON-safe for rq-dashboard


def test_a_second_refresh_replaces_the_province_and_drops_vanished_records(
    settings: Settings, conn: redis.Redis
) -> None:
    big = SyncTaskManager(settings, conn, upstream={"kind": "sample", "scale": 4000})
    small = SyncTaskManager(settings, conn, upstream={"kind": "sample", "scale": 1000})
    big.create_province_refresh_task("北京市")
    drain(conn)
    first = exported(conn, "110000")
    small.create_province_refresh_task("北京市")
    drain(conn)
    second = exported(conn, "110000")
    assert checksum(second) == checksum(province_hospitals(SampleDirectory(1000), "11"))
    assert len(second) < len(first)
    assert len(store.published_provinces(conn)) == 1
