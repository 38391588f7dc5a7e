"""A worker frozen mid-refresh (SIGSTOP: what a long GC pause, a VM stall or a partition does), its job taken over
and finished by another worker, a newer refresh published, then the frozen worker woken (SIGCONT): it writes
nothing, and the newer version stays published and complete.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from rq.job import Job
from rq.serializers import JSONSerializer

from jobs import keys
from jobs.config import Settings
from jobs.observe import counters
from jobs.redis_values import as_text, as_texts
from jobs.refresh import published
from jobs.refresh.job import province_job_id
from jobs.refresh.manager import SyncTaskManager
from jobs.upstream.sample import SampleDirectory
from jobs.upstream.serve import RunningUpstream
from tests.support.helpers import (
    alive,
    checksum,
    exported,
    refreshq_process,
    scheduler_running,
    wait_status,
    wait_until,
    work_horses,
    worker_process,
)
from tests.support.named_helpers import registry, trace

SCALE = 12_000
PROVINCE, NAME = "330000", "浙江省"  # 11 cities, 90 leaves at this scale: a walk and a fetch long enough to catch
pytestmark = [pytest.mark.slow, pytest.mark.upstream(scale=SCALE, latency_ms=150)]
ENDED = ("SUCCEEDED", "FAILED", "CANCELLED")


def stats(conn: redis.Redis, task_id: str, field: str) -> int:
    return int(conn.hget(keys.task_stats(task_id), field) or 0)


def walking(conn: redis.Redis, task_id: str) -> bool:
    """The province job has claimed its province and not saved its walk yet."""
    return bool(conn.hexists(keys.task_owners(task_id), PROVINCE)) and not conn.sismember(
        keys.task_walked(task_id), PROVINCE)


def fetching(conn: redis.Redis, task_id: str) -> bool:
    """The province job has staged some of its leaves, most are still to come."""
    return 5 <= stats(conn, task_id, keys.province_stat(PROVINCE, keys.PROVINCE_LEAVES_DONE)) <= 45


@contextlib.contextmanager
def frozen(pids: list[int]) -> Iterator[None]:
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def snapshot(conn: redis.Redis, task_id: str) -> dict[bytes, Any]:
    """Every key of a task and of its version, dumped, and the results RQ keeps of its province job."""
    found = conn.keys(f"refreshq:task:{task_id}*") + conn.keys(f"refreshq:data:{PROVINCE}@{task_id}:*")
    dumped: dict[bytes, Any] = {k: conn.dump(k) for k in found}
    job = Job.fetch(province_job_id(task_id, PROVINCE, "1"), connection=conn, serializer=JSONSerializer)
    dumped[b"results"] = [(r.type, r.created_at) for r in job.results()]
    return dumped


def refused(conn: redis.Redis) -> int:
    return sum(int(v) for k, v in conn.hgetall(keys.METRIC_COUNTERS).items()
               if as_text(k).startswith(counters.STALE_WRITES + counters.SEP))


@pytest.mark.parametrize("phase", [walking, fetching], ids=["walk", "fetch"])
def test_a_paused_worker_that_wakes_after_a_takeover_writes_nothing(
    settings: Settings, conn: redis.Redis, env: dict[str, str], slow_upstream: RunningUpstream,
    phase: Callable[[redis.Redis, str], bool],
) -> None:
    env = {**env, "REFRESHQ_JOB_CONCURRENCY": "2", "REFRESHQ_UPSTREAM_URL": slow_upstream.url}
    manager = SyncTaskManager(settings, conn, upstream={"kind": "http", "url": slow_upstream.url})
    with scheduler_running(env), worker_process(env) as sleeper:
        first = manager.create_province_refresh_task(NAME)
        horses = wait_until(lambda: phase(conn, first) and work_horses(sleeper.pid), 60, 0.005,
                            f"the province job {phase.__name__}")
        with frozen([sleeper.pid, *horses]):
            with worker_process(env):
                # The scheduler declares the job abandoned (its heartbeats stopped) and the other worker takes it.
                assert wait_status(manager, first, ENDED, timeout=120)["status"] == "SUCCEEDED"
                second = manager.create_province_refresh_task(NAME)
                assert wait_status(manager, second, ENDED, timeout=120)["status"] == "SUCCEEDED"
            before, refused_before = snapshot(conn, first), refused(conn)
        # Woken: the horse carries on with what it believed it owned, is refused, and stops.
        wait_until(lambda: not any(alive(pid) for pid in horses), 60, 0.1, "the woken work-horse to end")
        assert sleeper.poll() is None, "the woken worker exited"
        assert as_text(conn.hget(keys.PUBLISHED, PROVINCE)) == second
        assert snapshot(conn, first) == before  # the first task's record, counters and version: untouched
        assert refused(conn) > refused_before, "the woken work-horse tried no write?"
    version_keys = conn.keys(f"refreshq:data:{PROVINCE}@{second}:*")
    assert version_keys and all(conn.ttl(k) == -1 for k in version_keys)  # nothing of it expires
    expected = [h for h in SampleDirectory(SCALE).all_hospitals() if h["region_code"].startswith(PROVINCE[:2])]
    assert checksum(exported(conn)) == checksum(expected)
    assert published.verified_provinces(conn)[PROVINCE]["records"] == len(expected)
    assert as_texts(conn.hkeys(keys.task_failed_regions(first))) == []


@pytest.mark.parametrize("mode", [(), ("--fast",)], ids=["forking", "fast"])
def test_a_run_declared_abandoned_records_no_end_when_it_finishes(
    conn: redis.Redis, tenv: dict[str, str], mode: tuple[str, ...],
) -> None:
    """RQ's bookkeeping of an execution the scheduler declared abandoned (status, result, registries) is not
    written over whatever the job's next execution records, by either kind of worker."""
    run_id = registry().get("t-slow").delay(2.0)
    with refreshq_process(["worker", "--queue", "low", *mode], tenv):
        member = wait_until(lambda: [m for m in conn.zrange("rq:wip:low", 0, -1) if as_text(m).startswith(run_id)],
                            30, 0.01, "the run to start")[0]
        conn.zrem("rq:wip:low", member)  # as the scheduler's cleanup of an abandoned job does
        job = Job.fetch(run_id, connection=conn, serializer=JSONSerializer)
        wait_until(lambda: any(t.startswith("end slow") for t in trace(conn)), 30, 0.05, "the run's function to end")
        wait_until(lambda: _idle(conn), 30, 0.05, "the worker to be done with the run")
        assert job.get_status(refresh=True) == "started"
        assert job.results() == []
        assert int(conn.hget(keys.METRIC_COUNTERS, "stale_writes|result") or 0) == 1


def _idle(conn: redis.Redis) -> bool:
    workers = [as_text(w) for w in conn.smembers("rq:workers")]
    return bool(workers) and all(conn.hget(w, "state") == b"idle" for w in workers)
