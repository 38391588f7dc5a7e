"""Cancel (queued and running) and resume from the checkpoint."""

from __future__ import annotations

import pytest
import redis

from jobs import keys
from jobs.config import Settings
from jobs.errors import TaskStateError
from jobs.refresh import published as store
from jobs.refresh.manager import SyncTaskManager
from jobs.upstream.sample import SampleDirectory
from jobs.upstream.serve import RunningUpstream
from tests.support.helpers import checksum, drain, exported, horse_pids, wait_status, wait_until, worker_process

SCALE = 12_000
pytestmark = pytest.mark.upstream(scale=SCALE, latency_ms=30)  # the `slow_upstream` of these tests


@pytest.fixture
def manager(settings: Settings, conn: redis.Redis, slow_upstream: RunningUpstream) -> SyncTaskManager:
    return SyncTaskManager(settings, conn, upstream={"kind": "http", "url": slow_upstream.url})


def test_a_cancelled_queued_task_never_starts(
    manager: SyncTaskManager, conn: redis.Redis, slow_upstream: RunningUpstream
) -> None:
    task_id = manager.create_full_refresh_task()
    asked_at_creation = slow_upstream.stats()["total"]  # its province list: is the upstream there?
    assert manager.cancel_task(task_id) is True
    status = manager.get_task_status(task_id)
    assert status["status"] == "CANCELLED"
    assert status["finished_at"]
    drain(conn)
    assert manager.get_task_status(task_id)["status"] == "CANCELLED"
    assert slow_upstream.stats()["total"] == asked_at_creation == 1  # and not one request more
    assert store.published_provinces(conn) == {}
    assert manager.cancel_task(task_id) is False  # already ended


@pytest.mark.slow
def test_cancel_stops_a_running_task_keeps_its_checkpoint_and_resume_finishes_it(
    manager: SyncTaskManager, conn: redis.Redis, env: dict[str, str], slow_upstream: RunningUpstream
) -> None:
    task_id = manager.create_full_refresh_task()
    with worker_process(env) as worker:
        wait_until(lambda: manager.get_task_status(task_id)["progress"] >= 10, 120, what="progress >= 10%")
        assert manager.cancel_task(task_id) is True
        cancelled = wait_status(manager, task_id, ("CANCELLED", "SUCCEEDED", "FAILED"), timeout=30)
        assert cancelled["status"] == "CANCELLED"
        requests_at_cancel = slow_upstream.stats()["total"]
        # Once the job's work-horse is gone nothing can fetch any more: whatever it sent after the task
        # said CANCELLED is counted by then.
        wait_until(lambda: not horse_pids(worker.pid), 30, what="the cancelled job's work-horse to exit")
        assert slow_upstream.stats()["total"] == requests_at_cancel  # nothing more was fetched
    checkpointed = sum(conn.scard(k) for k in conn.scan_iter(match=keys.checkpoint_leaves(task_id, "*")))
    assert 0 < checkpointed < 2853
    expected = list(SampleDirectory(SCALE).all_hospitals())
    # Whatever got published before the cancel is whole provinces, exactly as the upstream has them.
    for code in store.published_provinces(conn):
        mine = [h for h in expected if str(h["region_code"]).startswith(code[:2])]
        assert checksum(exported(conn, code)) == checksum(mine)

    hospital_pages_before = slow_upstream.stats()["by_kind"].get("hospitals", 0)
    manager.resume_task(task_id)
    assert manager.get_task_status(task_id)["status"] == "PENDING"
    assert manager.get_task_status(task_id)["progress"] >= cancelled["progress"]
    with worker_process(env):
        seen: list[int] = []
        final = wait_until(
            lambda: (s := manager.get_task_status(task_id), seen.append(s["progress"]))[0]["status"]
            in ("SUCCEEDED", "FAILED") and s, 180, 0.05, "the resumed task to end",
        )
    assert final["status"] == "SUCCEEDED", final
    assert final["attempt"] == 2
    assert seen == sorted(seen) and seen[0] >= cancelled["progress"]  # progress never goes backwards
    assert final["statistics"]["hospitals_found"] == SCALE
    assert checksum(exported(conn)) == checksum(expected)
    # The resume fetched only the leaves the checkpoint did not hold (every sample leaf fits one page).
    pages_in_resume = slow_upstream.stats()["by_kind"]["hospitals"] - hospital_pages_before
    assert pages_in_resume <= 2853 - checkpointed + 16  # + leaves in flight at the cancel


def test_resume_needs_a_failed_or_cancelled_task(manager: SyncTaskManager, conn: redis.Redis) -> None:
    task_id = manager.create_province_refresh_task("澳门")
    with pytest.raises(TaskStateError, match="only FAILED or CANCELLED"):
        manager.resume_task(task_id)
    drain(conn)
    assert manager.get_task_status(task_id)["status"] == "SUCCEEDED"
    with pytest.raises(TaskStateError):
        manager.resume_task(task_id)
