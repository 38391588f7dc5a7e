"""Retries driven by the failed-job registry: classification, backoff, dead letters, resuming from them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import redis
from rq.job import JobStatus

from jobs import keys, queues
from jobs.config import Settings
from jobs.duties import dead_letters
from jobs.duties.retries import NEVER, PERMANENT, TRANSIENT, RetryPolicy, classify, sweep_failed_jobs
from jobs.errors import TransientUpstreamError
from jobs.redis_values import as_text_map
from jobs.refresh.manager import SyncTaskManager
from jobs.upstream.sample import SampleDirectory
from jobs.upstream.serve import RunningUpstream, start_background
from tests.support.faulty_upstream import FaultyProxy
from tests.support.helpers import checksum, drain, exported, run_cli, wait_until, worker_process
from workers import build_worker

FAST = RetryPolicy(base=0.2, factor=2, cap=0.5, max_retries=3)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("Traceback ...\njobs.errors.TransientUpstreamError: GET /regions: 503", TRANSIENT),
        ("Moved to FailedJobRegistry, due to AbandonedJobError, at 2026-11-22", TRANSIENT),
        ("Traceback ...\nredis.exceptions.ConnectionError: Error 111", TRANSIENT),
        ("Traceback ...\nhttpx.ReadTimeout: timed out", TRANSIENT),
        ("Traceback ...\njobs.errors.ValidationError: bad input", PERMANENT),
        ("Traceback ...\njobs.errors.PermanentUpstreamError: 404 for 999999", PERMANENT),
        ("Traceback ...\nrq.timeouts.JobTimeoutException: Task exceeded maximum timeout value (5 seconds)", PERMANENT),
        ("Traceback ...\nKeyError: 'x'", PERMANENT),
        ("Job stopped by user, work-horse terminated.", NEVER),
    ],
)
def test_failures_are_classified(text: str, kind: str) -> None:
    assert classify(text) == kind


def test_backoff_is_exponential_capped_and_jittered() -> None:
    policy = RetryPolicy()  # the reference design: base 1 s, factor 2, cap 60 s, 3 retries
    assert policy.max_retries == 3
    for attempt, nominal in [(1, 1), (2, 2), (3, 4), (4, 8), (7, 60), (12, 60)]:
        delays = [policy.delay(attempt) for _ in range(50)]
        assert all(0.8 * nominal <= d <= nominal for d in delays)
        assert len(set(delays)) > 1  # jitter


def _failed_once(conn: redis.Redis, func: str, *args: str) -> str:
    job = queues.queue(conn, queues.NORMAL).enqueue(func, *args)
    drain(conn, [queues.NORMAL])
    assert job.get_status(refresh=True) == JobStatus.FAILED
    return str(job.id)


def test_a_transient_failure_is_retried_after_its_backoff_then_buried(conn: redis.Redis) -> None:
    job_id = _failed_once(conn, "tests.support.job_functions.flaky", "never-set")
    registry = queues.queue(conn, queues.NORMAL).failed_job_registry
    for attempt in (1, 2, 3):
        before = datetime.now(UTC).timestamp()
        assert sweep_failed_jobs(conn, FAST, Settings.from_env()) == 0  # recorded, not yet due
        after = datetime.now(UTC).timestamp()
        state = as_text_map(conn.hgetall(keys.job_retry(job_id)))
        assert (state["attempt"], state["decision"], state["kind"]) == (str(attempt), "retry", TRANSIENT)
        # The failure was recorded at some moment between `before` and `after` (a busy machine stretches that).
        due = float(state["next_retry_ts"])
        assert 0.8 * FAST.nominal(attempt) - 0.05 <= due - before and due - after <= FAST.nominal(attempt) + 0.05
        assert "TransientUpstreamError" in state["last_error"]
        wait_until(lambda: sweep_failed_jobs(conn, FAST, Settings.from_env()) == 1, 5, 0.02, "the retry to fall due")
        assert job_id not in registry.get_job_ids()
        assert job_id in queues.queue(conn, queues.NORMAL).job_ids
        drain(conn, [queues.NORMAL])
    assert sweep_failed_jobs(conn, FAST, Settings.from_env()) == 1  # the 4th failure: out of retries
    assert job_id not in registry.get_job_ids()
    [entry] = dead_letters.list_dead(conn)
    assert entry["job_id"] == job_id
    assert entry["attempts"] == 4
    assert entry["kind"] == TRANSIENT


def test_a_permanent_failure_is_buried_at_once_and_can_be_retried(conn: redis.Redis, env: dict[str, str]) -> None:
    job_id = _failed_once(conn, "tests.support.job_functions.broken")
    assert sweep_failed_jobs(conn, FAST, Settings.from_env()) == 1
    [entry] = dead_letters.list_dead(conn)
    assert (entry["job_id"], entry["kind"], entry["attempts"]) == (job_id, PERMANENT, 1)
    shown = run_cli("failed", "show", job_id, env=env)
    assert shown.returncode == 0
    assert "ValidationError: bad input" in json.loads(shown.stdout)["traceback"]
    listed = run_cli("failed", "list", "--json", env=env)
    assert [e["job_id"] for e in json.loads(listed.stdout)] == [job_id]
    retried = run_cli("failed", "retry", job_id, env=env)
    assert retried.returncode == 0, retried.stderr
    assert job_id in queues.queue(conn, queues.NORMAL).job_ids
    assert dead_letters.list_dead(conn) == []
    assert run_cli("failed", "retry", "nope", env=env).returncode == 2


def test_purge_empties_the_dead_letter_registry(conn: redis.Redis, env: dict[str, str]) -> None:
    _failed_once(conn, "tests.support.job_functions.broken")
    sweep_failed_jobs(conn, FAST, Settings.from_env())
    result = run_cli("failed", "purge", "--yes", env=env)
    assert result.stdout.strip() == "purged 1 dead jobs"
    assert dead_letters.list_dead(conn) == []


@pytest.fixture
def faulty() -> Iterator[tuple[RunningUpstream, FaultyProxy]]:
    with start_background(3000) as upstream:
        proxy = FaultyProxy(upstream.url)
        yield upstream, proxy
        proxy.close()


def test_a_refresh_out_of_retries_fails_and_failed_retry_resumes_from_the_checkpoint(
    conn: redis.Redis, env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
    faulty: tuple[RunningUpstream, FaultyProxy],
) -> None:
    monkeypatch.setenv("REFRESHQ_UPSTREAM_ATTEMPTS", "1")  # the client gives up at once: the sweeper retries
    _upstream, proxy = faulty
    manager = SyncTaskManager(Settings.from_env(), conn, upstream={"kind": "http", "url": proxy.url})
    proxy.failing = {"440104"}  # 越秀区
    task_id = manager.create_province_refresh_task("广东省")
    drain(conn)
    status = manager.get_task_status(task_id)
    assert status["status"] == "RUNNING"
    for attempt in (1, 2, 3):
        sweep_failed_jobs(conn, FAST, Settings.from_env())
        retrying = manager.get_task_status(task_id)
        assert retrying["status"] == "PENDING"  # the automatic retry the reference design shows
        # The attempt the retry makes (the first one failed), of 1 + 3 retries: as the error message counts.
        assert (retrying["retry"]["attempt"], retrying["retry"]["max_attempts"]) == (attempt + 1, 4)
        assert retrying["retry"]["next_retry_at"]
        assert "503" in retrying["retry"]["last_error"]
        wait_until(lambda: sweep_failed_jobs(conn, FAST, Settings.from_env()) == 1, 5, 0.02, "the retry to fall due")
        drain(conn)
    sweep_failed_jobs(conn, FAST, Settings.from_env())
    failed = manager.get_task_status(task_id)
    assert failed["status"] == "FAILED", failed
    assert "440000" in failed["error_message"] and "(after 4 attempt(s))" in failed["error_message"]
    assert (failed["retry"]["attempt"], failed["retry"]["max_attempts"]) == (4, 4)  # the last one, which failed
    [dead] = dead_letters.list_dead(conn)
    assert (dead["task_id"], dead["attempts"]) == (task_id, 4)
    leaves_fetched = sum(n for path, n in proxy.paths.items() if path.endswith("/hospitals"))

    proxy.failing = set()
    proxy.paths.clear()
    dead_letters.retry_dead(conn, dead["job_id"])
    drain(conn)
    final = manager.get_task_status(task_id)
    assert final["status"] == "SUCCEEDED", final
    # Only the leaf that never got in was fetched again.
    assert [p for p in proxy.paths if p.endswith("/hospitals")] == ["/v1/regions/440104/hospitals"]
    assert leaves_fetched > 100



def test_a_plan_job_retried_while_its_provinces_run_leaves_the_task_running_and_exact(
    conn: redis.Redis, env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The plan job hands provinces out as it walks them (all of them, whatever happens); when it fails after
    some are under way, the task is not waiting for that retry alone: it stays RUNNING, and the provinces
    running meanwhile publish. Before, the task went PENDING, their publish found it not RUNNING, and the task
    ended CANCELLED with nobody cancelling it (seen when a worker was SIGKILLed mid-plan)."""

    def walk_fails(*args: object, **kwargs: object) -> None:
        raise TransientUpstreamError("the walk failed half-way")

    with start_background(3000, latency_ms=30) as upstream:
        manager = SyncTaskManager(Settings.from_env(), conn, upstream={"kind": "http", "url": upstream.url})
        task_id = manager.create_full_refresh_task()
        with monkeypatch.context() as patched:
            patched.setattr("jobs.refresh.plan.prewalk", walk_fails)  # in this process and its work-horse
            build_worker(conn, [queues.REFRESH]).work(burst=True, max_jobs=1, logging_level="WARNING")
        assert len(queues.queue(conn, queues.REFRESH)) > 10  # the failed plan handed every province out
        with worker_process(env):
            wait_until(lambda: int(conn.hget(keys.task_stats(task_id), "leaves_done") or 0) > 0, 60, 0.02,
                       "a province under way")
            assert sweep_failed_jobs(conn, FAST, manager.settings) == 0  # the plan job's failure seen: its retry waits
            assert manager.get_task_status(task_id)["status"] == "RUNNING"
            final = wait_until(
                lambda: sweep_failed_jobs(conn, FAST, manager.settings) >= 0
                and (s := manager.get_task_status(task_id))["status"] in ("SUCCEEDED", "FAILED", "CANCELLED") and s,
                120, 0.1, "the refresh to end")
    assert final["status"] == "SUCCEEDED", final
    assert final["statistics"]["hospitals_found"] == 3000
    assert checksum(exported(conn)) == checksum(SampleDirectory(3000).all_hospitals())
