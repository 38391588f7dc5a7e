"""Real refreshes by worker processes against an upstream that limits the way real ones do
(tests/support/limited_upstream.py: answers of 0.3-0.7 s, at most 100 requests admitted in any rolling
second by arrival time, 429 with Retry-After: 1 beyond): the rate configured, its budget used to >= 95%
with <= 0.1% refused; the rate unknown (auto), found and used to >= 80% with <= 2% refused; exact both
times. A Retry-After from the upstream stops two workers' requests for the time it names. Three workers
keep 64 requests each in flight (192 in all: up to 3.8 times the limit at these answer times). With the
issue's two workers (128 in flight) the budget used is some 93%, the pacing's 97% less the moments when
both workers are between provinces at once (the end of one province's walk and the start of the next ask
few requests): the refresh itself, not the pacing, leaves that part of the budget unused (see the bench's
rate-limited scenario, which runs the issue's two). Rates are measured between the 10th and the 90th
percentile of the admissions. Over TCP only: the connection kind changes nothing here, and each refresh
takes some 40 s."""

from __future__ import annotations

import pytest
import redis

from jobs import keys
from jobs.config import Settings
from jobs.refresh.manager import SyncTaskManager
from jobs.statuses import TERMINAL
from jobs.upstream.sample import SampleDirectory
from tests.support.helpers import checksum, exported, wait_status, wait_until, worker_process
from tests.support.limited_upstream import limited_upstream

SCALE, LIMIT = 3000, 50
WORKERS_ENV = {"REFRESHQ_UPSTREAM_CONCURRENCY": "96", "REFRESHQ_JOB_CONCURRENCY": "32"}


def _env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, **extra: str) -> dict[str, str]:
    for name, value in {**WORKERS_ENV, **extra}.items():
        monkeypatch.setenv(name, value)
    return {**env, **WORKERS_ENV, **extra}


@pytest.mark.parametrize("connection_kind", ["tcp"])
@pytest.mark.parametrize(("rps", "used", "refused"), [(str(LIMIT), 0.95, 0.001), ("auto", 0.80, 0.02)],
                         ids=["configured", "unknown"])
@pytest.mark.slow
def test_a_refresh_uses_the_upstreams_budget_and_is_hardly_ever_refused(
    conn: redis.Redis, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, rps: str, used: float, refused: float
) -> None:
    env = _env(env, monkeypatch, REFRESHQ_UPSTREAM_RPS=rps)
    with limited_upstream(SCALE, LIMIT) as upstream:
        manager = SyncTaskManager(Settings.from_env(), conn, upstream={"kind": "http", "url": upstream.url})
        task_id = manager.create_full_refresh_task()
        with worker_process(env), worker_process(env), worker_process(env):
            final = wait_status(manager, task_id, TERMINAL, 300)
        figures = upstream.limiter.figures()
    print(f"REFRESHQ_UPSTREAM_RPS={rps}: {figures}")
    assert final["status"] == "SUCCEEDED", final
    assert final["statistics"]["hospitals_found"] == SCALE
    assert checksum(exported(conn)) == checksum(SampleDirectory(SCALE).all_hospitals())
    assert figures["budget_used"] >= used
    assert figures["refused_share"] <= refused
    assert figures["requests"] > 3000


@pytest.mark.parametrize("connection_kind", ["tcp"])
@pytest.mark.slow
def test_a_retry_after_stops_every_workers_requests_for_the_time_it_names(
    conn: redis.Redis, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pause = 30.0  # the Retry-After, whole (REFRESHQ_UPSTREAM_PAUSE_MAX is 60 s by default)
    env = _env(env, monkeypatch, REFRESHQ_UPSTREAM_RPS="100")
    with limited_upstream(SCALE, LIMIT, throttle_at=(150, pause)) as upstream:
        manager = SyncTaskManager(Settings.from_env(), conn, upstream={"kind": "http", "url": upstream.url})
        tasks = [manager.create_province_refresh_task(name) for name in ("四川", "河北")]
        with worker_process(env), worker_process(env):
            # Both provinces under way, one on each worker, when the upstream says to wait.
            wait_until(lambda: upstream.limiter.throttled_at is not None, 120, 0.02, "the upstream to throttle")
            holders = conn.zrange(keys.UPSTREAM_HOLDERS, 0, -1)
            finals = [wait_status(manager, t, TERMINAL, 180) for t in tasks]
        throttled_at, arrivals = upstream.limiter.throttled_at, list(upstream.limiter.arrivals)
    assert throttled_at is not None
    assert len({h.split(b"@")[1] for h in holders}) == 2, holders  # two workers were sending
    start, end = throttled_at + 0.3, throttled_at + pause - 0.1
    during = [(t - throttled_at, path) for t, _, path in arrivals if start < t < end]
    after = [t - throttled_at for t, _, _ in arrivals if t > throttled_at + pause - 0.1]
    provinces_before = {path.split("/")[3][:2] for t, _, path in arrivals if throttled_at - 2 < t < throttled_at}
    provinces_after = {path.split("/")[3][:2] for t, _, path in arrivals if throttled_at + pause - 0.1 < t}
    print(f"requests within the pause: {len(during)}; the first after it {min(after):.2f} s after the 429")
    assert provinces_before == provinces_after == {"51", "13"}  # both workers, before and after
    assert during == []
    assert pause - 0.1 < min(after) < pause + 2.0
    assert [f["status"] for f in finals] == ["SUCCEEDED", "SUCCEEDED"], finals
