"""GET /metrics: Prometheus text that prometheus_client's own parser reads, whose values are the truth counted
here; counters kept in Redis, so a worker killed with SIGKILL takes none of them along; scrape auth."""

from __future__ import annotations

import base64
import os
import signal
from typing import Any

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from jobs import keys, limits, queues
from jobs.config import Settings
from jobs.pacing import PacePolicy
from jobs.refresh.manager import SyncTaskManager
from jobs.statuses import CANCELLED, PENDING, SUCCEEDED
from jobs.upstream.serve import start_background
from tests.support.helpers import (
    drain,
    exported,
    run_cli,
    scheduler_running,
    wait_status,
    wait_until,
    work_horses,
    worker_process,
)
from tests.support.web_helpers import served
from web.app import create_app

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(base_url: str, **headers: str) -> Samples:
    response = httpx.get(f"{base_url}/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_metrics_equal_the_truth(conn: redis.Redis, env: dict[str, str]) -> None:
    settings = Settings.from_env({**env, "REFRESHQ_SAMPLE_SCALE": "3000"})
    manager = SyncTaskManager(settings, conn)
    done = manager.create_province_refresh_task("北京")
    drain(conn)
    final = wait_status(manager, done, [SUCCEEDED])
    waiting = [manager.create_province_refresh_task(p) for p in ("上海", "天津", "重庆")]
    manager.cancel_task(waiting[2])
    with served(create_app(settings, env["REDIS_URL"])) as base:
        samples = scrape(base)
    truth_records = len(exported(conn))
    assert truth_records == final["statistics"]["hospitals_found"] > 0
    assert value(samples, "refreshq_records_written_total") == truth_records
    assert value(samples, "refreshq_tasks", status=SUCCEEDED) == 1
    assert value(samples, "refreshq_tasks", status=PENDING) == 2
    assert value(samples, "refreshq_tasks", status=CANCELLED) == 1
    assert value(samples, "refreshq_tasks_ended_total", kind="province", status=SUCCEEDED) == 1
    assert value(samples, "refreshq_tasks_ended_total", kind="province", status=CANCELLED) == 1
    assert value(samples, "refreshq_tasks_ended_total", kind="full", status=SUCCEEDED) == 0
    assert value(samples, "refreshq_queue_jobs", queue="refresh") == conn.llen("rq:queue:refresh") == 2
    assert value(samples, "refreshq_queue_oldest_job_age_seconds", queue="refresh") >= 0
    assert value(samples, "refreshq_queue_live_workers", queue="refresh") == 0
    assert value(samples, "refreshq_refresh_run_seconds_count", kind="province") == 1
    assert value(samples, "refreshq_refresh_run_seconds_bucket", kind="province", le="14400.0") == 1
    assert value(samples, "refreshq_refresh_run_seconds_bucket", kind="province", le="+Inf") == 1
    assert value(samples, "refreshq_registry_jobs", queue="refresh", registry="finished") >= 2  # plan + province
    assert value(samples, "refreshq_dead_letter_jobs") == 0
    assert value(samples, "refreshq_scheduler_up") == 0  # no scheduler in this test


def _stats(conn: redis.Redis, task_id: str, field: str) -> int:
    return int(conn.hget(keys.task_stats(task_id), field) or 0)


@pytest.mark.slow
def test_counters_survive_a_worker_sigkill(conn: redis.Redis, env: dict[str, str]) -> None:
    with start_background(20_000, latency_ms=40) as upstream:
        http_env = {**env, "REFRESHQ_UPSTREAM_URL": upstream.url}
        settings = Settings.from_env(http_env)
        manager = SyncTaskManager(settings, conn)
        task_id = manager.create_province_refresh_task("广东")
        with served(create_app(settings, env["REDIS_URL"])) as base, scheduler_running(http_env):
            with worker_process(http_env) as first:
                wait_until(lambda: _stats(conn, task_id, "leaves_done") >= 10, 120, what="10 leaves staged")
                horses = wait_until(lambda: work_horses(first.pid), 10, what="a work-horse")
                before = scrape(base)
                os.kill(first.pid, signal.SIGKILL)
                for pid in horses:
                    os.kill(pid, signal.SIGKILL)
            after_kill = scrape(base)
            staged = _stats(conn, task_id, "hospitals_found")
            assert staged < 20_000, "the province ended before the kill: the test proves nothing"
            written = value(after_kill, "refreshq_records_written_total")
            assert value(before, "refreshq_records_written_total") <= written == staged
            requests = value(after_kill, "refreshq_upstream_requests_total", kind="http")
            assert value(before, "refreshq_upstream_requests_total", kind="http") <= requests > 0
            with worker_process(http_env):
                final = wait_status(manager, task_id, [SUCCEEDED, "FAILED"], 180)
            assert final["status"] == SUCCEEDED, final
            end = scrape(base)
    assert value(end, "refreshq_records_written_total") == final["statistics"]["hospitals_found"] == len(exported(conn))
    assert requests <= value(end, "refreshq_upstream_requests_total", kind="http") <= upstream.stats()["total"]
    assert value(end, "refreshq_retries_total", kind="refresh") >= 1  # the killed job, requeued by the sweeper
    assert value(end, "refreshq_tasks_ended_total", kind="province", status=SUCCEEDED) == 1


@pytest.mark.parametrize(("password", "token"), [("pw", None), (None, "scrape-token"), ("pw", "scrape-token")])
def test_metrics_ask_for_the_password_or_the_token(
    conn: redis.Redis, env: dict[str, str], password: str | None, token: str | None
) -> None:
    extra = {k: v for k, v in (("REFRESHQ_WEB_PASSWORD", password), ("REFRESHQ_METRICS_TOKEN", token)) if v}
    settings = Settings.from_env({**env, **extra})
    basic = "Basic " + base64.b64encode(b"prometheus:pw").decode()
    wrong = "Basic " + base64.b64encode(b"prometheus:nope").decode()
    with served(create_app(settings, env["REDIS_URL"])) as base:
        def status(**headers: Any) -> int:
            return httpx.get(f"{base}/metrics", headers=headers, timeout=10).status_code

        assert status() == 401
        assert status(Authorization=wrong) == 401 and status(Authorization="Bearer wrong") == 401
        assert status(Authorization=basic) == (200 if password else 401)
        assert status(Authorization="Bearer scrape-token") == (200 if token else 401)
        if password:
            assert httpx.get(f"{base}/rq/", headers={"Authorization": "Bearer scrape-token"}).status_code == 401


def test_metrics_are_open_without_password_or_token(conn: redis.Redis, settings: Settings, env: dict[str, str]) -> None:
    queues.queue(conn, queues.LOW).enqueue("tests.support.job_functions.add", 1, 2)
    with served(create_app(settings, env["REDIS_URL"])) as base:
        samples = scrape(base)
    assert value(samples, "refreshq_queue_jobs", queue="low") == 1
    assert value(samples, "refreshq_queue_live_workers", queue="low") == 0


def test_the_upstreams_pacing_is_scraped_and_shown_in_the_status(
    conn: redis.Redis, settings: Settings, env: dict[str, str]
) -> None:
    manager = SyncTaskManager(settings, conn)
    task_id = manager.create_province_refresh_task("北京")
    with served(create_app(settings, env["REDIS_URL"])) as base:
        assert not any(name.startswith("refreshq_upstream_rate") for name, _ in scrape(base))  # nothing paced yet
        assert manager.get_task_status(task_id)["upstream_pacing"] is None
        gate = limits.UpstreamGate(conn, "job-a", 0, PacePolicy.from_settings(settings), threads=1)
        try:
            with gate() as admission:  # nothing learned: let through at once
                assert admission is not None
            assert value(scrape(base), "refreshq_upstream_rate_limit", mode="auto") == float("inf")
            with gate() as admission:
                assert admission is not None
                admission.answered(429, 30.0)  # the upstream throttles: every worker waits 30 s
        finally:
            gate.close()
        samples = scrape(base)
    pacing = manager.get_task_status(task_id)["upstream_pacing"]
    assert pacing["mode"] == "auto" and pacing["paused_until"] is not None and 28 < pacing["paused_seconds"] <= 30
    assert value(samples, "refreshq_upstream_rate_limit", mode="auto") == pacing["rate"] > 0
    assert value(samples, "refreshq_upstream_throttled_total", signal="429") == 1
    assert 28 < value(samples, "refreshq_upstream_paused_seconds") <= 30
    shown = run_cli("status", task_id, env=env)
    assert f"upstream rate: {pacing['rate']:g}/s learned (throttled at {pacing['learned_from']:g}/s); paused until" \
        in shown.stdout, shown.stdout
