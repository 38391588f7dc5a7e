"""Fencing tokens (jobs.refresh.fence): a job execution that no longer owns its part of a task writes nothing.

These tests drive the fence's scripts against the real server, one write path at a time; tests/processes/test_paused.py
freezes real workers (SIGSTOP) in the middle of a refresh and wakes them after their work was taken over.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
from rq.exceptions import AbandonedJobError
from rq.job import Job
from rq.serializers import JSONSerializer

from jobs import keys
from jobs.context import JobContext
from jobs.duties.abandoned import release_abandoned
from jobs.errors import StaleExecutionError
from jobs.named import history
from jobs.observe import counters
from jobs.redis_values import as_text, as_text_map
from jobs.refresh import fence, published, records
from jobs.refresh.finish import end_province
from jobs.refresh.job import PROVINCE_FUNC
from jobs.refresh.published import Leaf
from jobs.scripts import Scripts
from jobs.statuses import CANCELLED, RUNNING, SUCCEEDED
from tests.support.helpers import run_cli

PROVINCE = "110000"
LEAF = Leaf("110101", "东城区", "district", "北京市", "北京市")
OTHER_LEAF = Leaf("110102", "西城区", "district", "北京市", "北京市")


def hospital(n: int, leaf: str = "110101") -> dict[str, Any]:
    return {"id": f"H{leaf}{n:06d}", "name": f"医院{n}", "region_code": leaf, "grade": "三甲", "type": "综合",
            "address": "路", "phone": "1", "updated_at": "2026-12-01"}


def running_task(conn: redis.Redis, task_id: str, created_ts: float) -> None:
    conn.hset(keys.task(task_id), mapping={"task_id": task_id, "status": RUNNING, "created_ts": repr(created_ts)})


def job_of(conn: redis.Redis, task_id: str, code: str = PROVINCE) -> Job:
    return Job.create(PROVINCE_FUNC, args=[task_id, code], id=f"{task_id}-p{code}-1", connection=conn,
                      serializer=JSONSerializer, origin="refresh")


def started(conn: redis.Redis, job: Job, execution: str, expires_in: float = 60) -> JobContext:
    """A context as refreshq's worker installs it, its execution registered as started."""
    member = f"{job.id}:{execution}"
    conn.zadd("rq:wip:refresh", {member: int(conn.time()[0] + expires_in)})
    return JobContext(settings=None, execution=member, started_registry="rq:wip:refresh")  # type: ignore[arg-type]


def refused(conn: redis.Redis, write: str) -> int:
    return int(conn.hget(keys.METRIC_COUNTERS, counters.name(counters.STALE_WRITES, write)) or 0)


def test_an_execution_taken_over_stages_nothing_and_its_write_is_counted(conn: redis.Redis) -> None:
    task = "task_20261207_000000_aaaaaa"
    running_task(conn, task, 1.0)
    job = job_of(conn, task)
    first = fence.claim(conn, job, started(conn, job, "first"), task, PROVINCE)
    published.stage_leaf(Scripts(conn), PROVINCE, task, LEAF, [hospital(1)], first)
    second = fence.claim(conn, job, started(conn, job, "second"), task, PROVINCE)  # the work is taken over
    with pytest.raises(StaleExecutionError):
        published.stage_leaf(Scripts(conn), PROVINCE, task, OTHER_LEAF, [hospital(2, "110102")], first)
    assert not conn.sismember(keys.checkpoint_leaves(task, PROVINCE), OTHER_LEAF.code)
    assert not conn.exists(keys.data_leaf(PROVINCE, task, OTHER_LEAF.code))
    assert refused(conn, "stage") == 1
    published.stage_leaf(Scripts(conn), PROVINCE, task, OTHER_LEAF, [hospital(2, "110102")], second)
    assert conn.sismember(keys.checkpoint_leaves(task, PROVINCE), OTHER_LEAF.code)


def test_every_fenced_write_of_a_stale_execution_is_refused(conn: redis.Redis) -> None:
    """Progress, a failed region, a walk, the end of a province and a publish: none lands, each is counted."""
    task = "task_20261207_000000_bbbbbb"
    running_task(conn, task, 1.0)
    job = job_of(conn, task)
    stale = fence.claim(conn, job, started(conn, job, "old"), task, PROVINCE)
    published.stage_leaf(Scripts(conn), PROVINCE, task, LEAF, [hospital(1)], stale)
    fence.claim(conn, job, started(conn, job, "new"), task, PROVINCE)
    before = {k: conn.dump(k) for k in conn.keys("refreshq:task:*") + conn.keys("refreshq:data:*")}
    region = {"code": "110102", "name": "西城区", "level": "district"}
    attempts = {
        "region": lambda: fence.guarded(conn, stale, "region", lambda p: records.failed_region(p, task, region, "x")),
        "end": lambda: end_province(conn, task, PROVINCE, "published", None, published=True, fence=stale),  # type: ignore[arg-type]
        "publish": lambda: published.publish(conn, PROVINCE, task, "北京市", stale),
    }
    for write, attempt in attempts.items():
        with pytest.raises(StaleExecutionError):
            attempt()
        assert refused(conn, write) == 1, write
    after = {k: conn.dump(k) for k in conn.keys("refreshq:task:*") + conn.keys("refreshq:data:*")}
    assert after == before
    assert conn.hget(keys.PUBLISHED, PROVINCE) is None


def test_a_claim_of_an_execution_declared_abandoned_is_refused(conn: redis.Redis) -> None:
    task = "task_20261207_000000_cccccc"
    running_task(conn, task, 1.0)
    job = job_of(conn, task)
    lapsed = started(conn, job, "paused", expires_in=-5)  # its heartbeats stopped: the registry entry lapsed
    with pytest.raises(StaleExecutionError, match="ABANDONED"):
        fence.claim(conn, job, lapsed, task, PROVINCE)
    conn.zrem("rq:wip:refresh", lapsed.execution)  # the scheduler cleaned it up
    with pytest.raises(StaleExecutionError, match="ABANDONED"):
        fence.claim(conn, job, lapsed, task, PROVINCE)
    assert not conn.exists(keys.task_owners(task))


def test_abandonment_drops_the_claims_of_that_job_only(conn: redis.Redis) -> None:
    task = "task_20261207_000000_dddddd"
    running_task(conn, task, 1.0)
    job, other = job_of(conn, task), job_of(conn, task, "120000")
    claimed = fence.claim(conn, job, started(conn, job, "e1"), task, PROVINCE)
    kept = fence.claim(conn, other, started(conn, other, "e2"), task, "120000")
    job.save()
    release_abandoned(job, AbandonedJobError, AbandonedJobError(), None)
    assert as_text_map(conn.hgetall(keys.task_owners(task))) == {"120000": kept.token}
    with pytest.raises(StaleExecutionError):
        published.stage_leaf(Scripts(conn), PROVINCE, task, LEAF, [hospital(1)], claimed)


def test_a_task_that_ends_ends_every_claim_and_no_claim_is_taken_after(conn: redis.Redis) -> None:
    task = "task_20261207_000000_eeeeee"
    running_task(conn, task, 1.0)
    conn.hset(keys.task(task), "task_id", task)
    job = job_of(conn, task)
    fence.claim(conn, job, started(conn, job, "e1"), task, PROVINCE)
    assert records.transition(conn, task, (RUNNING,), CANCELLED)
    assert not conn.exists(keys.task_owners(task))
    with pytest.raises(StaleExecutionError, match="ENDED"):
        fence.claim(conn, job, started(conn, job, "e2"), task, PROVINCE)


def _staged_and_claimed(conn: redis.Redis, task: str, created_ts: float, n: int) -> fence.Fence:
    running_task(conn, task, created_ts)
    job = job_of(conn, task)
    claimed = fence.claim(conn, job, started(conn, job, f"x{n}"), task, PROVINCE)
    published.stage_leaf(Scripts(conn), PROVINCE, task, LEAF, [hospital(i) for i in range(n)], claimed)
    return claimed


def test_a_province_pointer_never_moves_back_to_an_older_task_s_version(conn: redis.Redis) -> None:
    older, newer = "task_20261207_000000_older0", "task_20261207_000001_newer0"
    old_fence = _staged_and_claimed(conn, older, 100.0, 3)
    new_fence = _staged_and_claimed(conn, newer, 200.0, 5)
    assert published.publish(conn, PROVINCE, newer, "北京市", new_fence) == published.Publication("published", 5)
    assert published.publish(conn, PROVINCE, older, "北京市", old_fence) == published.Publication("superseded", 0)
    assert as_text(conn.hget(keys.PUBLISHED, PROVINCE)) == newer
    assert conn.ttl(keys.data_leaf(PROVINCE, newer, LEAF.code)) == -1
    assert not conn.exists(keys.data_leaf(PROVINCE, older, LEAF.code))  # the superseded staging is dropped
    assert published.verified_provinces(conn)[PROVINCE]["records"] == 5


def test_a_version_published_again_loses_the_expiry_it_was_given_when_replaced(conn: redis.Redis) -> None:
    first, second = "task_20261207_000000_first0", "task_20261207_000001_secnd0"
    first_fence = _staged_and_claimed(conn, first, 100.0, 3)
    second_fence = _staged_and_claimed(conn, second, 200.0, 4)
    published.publish(conn, PROVINCE, first, "北京市", first_fence)
    # A pointer written back by hand (or by an older refreshq) to a version that was replaced meanwhile: its
    # keys carry the grace period's expiry. Publishing it again must leave nothing expiring under readers.
    published.publish(conn, PROVINCE, second, "北京市", second_fence)
    assert conn.ttl(keys.data_leaf(PROVINCE, first, LEAF.code)) > 0
    conn.hset(keys.PUBLISHED, PROVINCE, first)
    conn.hdel(keys.PUBLISHED_ORDER, PROVINCE)
    assert published.publish(conn, PROVINCE, first, "北京市", first_fence).outcome == "published"
    for key in (keys.data_leaf(PROVINCE, first, LEAF.code), keys.data_leaves(PROVINCE, first),
                keys.data_sizes(PROVINCE, first)):
        assert conn.ttl(key) == -1, key


def test_a_cancelled_task_publishes_nothing(conn: redis.Redis) -> None:
    task = "task_20261207_000000_cancel"
    claimed = _staged_and_claimed(conn, task, 100.0, 2)
    conn.set(keys.task_cancel(task), "user")
    assert published.publish(conn, PROVINCE, task, "北京市", claimed).outcome == "ended"
    assert conn.hget(keys.PUBLISHED, PROVINCE) is None


def test_a_full_refresh_never_unpublishes_a_province_a_later_task_published(conn: redis.Redis) -> None:
    """A full refresh whose upstream stopped listing a province unpublishes it only if its version is older."""
    full, later = "task_20261207_000000_full00", "task_20261207_000100_later0"
    _staged_and_claimed(conn, full, 100.0, 1)
    later_fence = _staged_and_claimed(conn, later, 200.0, 2)
    published.publish(conn, PROVINCE, later, "北京市", later_fence)
    with conn.pipeline() as pipe:
        pipe.watch(keys.PUBLISHED)
        gone = published.unlisted_versions(pipe, set(), published.version_order(pipe, full))
        pipe.reset()
    assert gone == {}


def test_data_stats_count_what_is_really_there(conn: redis.Redis) -> None:
    task = "task_20261207_000000_stats0"
    claimed = _staged_and_claimed(conn, task, 100.0, 3)
    published.stage_leaf(Scripts(conn), PROVINCE, task, OTHER_LEAF, [hospital(1, "110102")], claimed)
    published.publish(conn, PROVINCE, task, "北京市", claimed)
    assert published.verified_provinces(conn)[PROVINCE] | {"published_at": None} == {
        "name": "北京市", "records": 4, "leaves": 2, "version": task, "missing_leaves": 0, "published_at": None,
    }
    conn.delete(keys.data_leaf(PROVINCE, task, LEAF.code))  # lost (an expiry, a failover that lost writes)
    stats = published.verified_provinces(conn)[PROVINCE]
    assert (stats["records"], stats["leaves"], stats["missing_leaves"]) == (1, 1, 1)
    assert json.loads(conn.hget(keys.PUBLISHED_META, PROVINCE))["records"] == 4  # what was published, kept


def test_an_execution_outside_refreshq_s_worker_is_fenced_by_its_own_token(conn: redis.Redis) -> None:
    task = "task_20261207_000000_plain0"
    running_task(conn, task, 1.0)
    job = job_of(conn, task)
    plain = JobContext(settings=None)  # type: ignore[arg-type]
    first = fence.claim(conn, job, plain, task, PROVINCE)
    second = fence.claim(conn, job, plain, task, PROVINCE)
    assert first.token != second.token and first.token.startswith(job.id + ":")
    with pytest.raises(StaleExecutionError):
        published.stage_leaf(Scripts(conn), PROVINCE, task, LEAF, [hospital(1)], first)
    assert records.transition(conn, task, (RUNNING,), SUCCEEDED)


def test_the_data_stats_command_shows_what_the_keys_hold(conn: redis.Redis, env: dict[str, str]) -> None:
    task = "task_20261207_000000_cli000"
    claimed = _staged_and_claimed(conn, task, 100.0, 3)
    published.publish(conn, PROVINCE, task, "北京市", claimed)
    conn.delete(keys.data_leaf(PROVINCE, task, LEAF.code))
    shown = json.loads(run_cli("data", "stats", "--json", env=env).stdout)
    assert (shown[PROVINCE]["records"], shown[PROVINCE]["missing_leaves"]) == (0, 1)
    assert "1 regions MISSING" in run_cli("data", "stats", env=env).stdout


def test_a_named_run_declared_lost_keeps_that_record_when_its_paused_attempt_ends(conn: redis.Redis) -> None:
    bounds = history.Bounds()
    exec_id = history.record_start(conn, "t-slow", "t-slow-run", 1, bounds)
    job = Job.create("jobs.named.runs.run_named_task", args=["t-slow", [], {}], id="t-slow-run", connection=conn,
                     serializer=JSONSerializer, meta={"task": "t-slow", "attempt": 1})
    assert history.note_lost_run(conn, job, 1.0e9)  # its worker missed its heartbeats: the attempt is lost
    assert history.record_end(conn, "t-slow", exec_id, SUCCEEDED, result=1) is None  # the woken attempt ends
    assert history.entry(conn, "t-slow", exec_id)["error"] == history.LOST  # type: ignore[index]
    assert refused(conn, "history") == 1


def test_data_stats_of_several_provinces_count_each_its_own_keys(conn: redis.Redis) -> None:
    """Provinces published out of code order, one of them missing a leaf: each is counted from its own keys."""
    task = "task_20261207_000000_multi0"
    running_task(conn, task, 100.0)
    for code, leaf, n in (("120000", "120101", 2), ("110000", "110101", 3)):
        claimed = fence.claim(conn, job_of(conn, task, code), JobContext(settings=None), task, code)  # type: ignore[arg-type]
        where = Leaf(leaf, "区", "district", "市", "省")
        published.stage_leaf(Scripts(conn), code, task, where, [hospital(i, leaf) for i in range(n)], claimed)
        published.publish(conn, code, task, "省", claimed)
    conn.delete(keys.data_leaf("120000", task, "120101"))
    stats = published.verified_provinces(conn)
    assert [(c, s["records"], s["missing_leaves"]) for c, s in stats.items()] == [("110000", 3, 0), ("120000", 0, 1)]
