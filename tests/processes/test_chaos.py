"""Chaos: a flaky upstream, workers killed with SIGKILL, the server itself killed; nothing lost or duplicated."""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path

import pytest
import redis
from rq import Worker

from jobs import keys
from jobs.config import Settings
from jobs.connection import connect
from jobs.embedded_server import EmbeddedServer
from jobs.refresh import published as store
from jobs.refresh.manager import SyncTaskManager
from jobs.upstream.sample import SampleDirectory
from jobs.upstream.serve import start_background
from tests.support.helpers import (
    checksum,
    exported,
    kill_with_horses,
    spawn_refreshq,
    wait_for_aof,
    wait_until,
    work_horses,
)

pytestmark = pytest.mark.slow

TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")


class Fleet:
    """Worker and scheduler processes, all killed at the end whatever happens."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.workers = [spawn_refreshq(["worker", "--queue", "refresh"], env) for _ in range(2)]
        self.scheduler = spawn_refreshq(["scheduler"], env)

    def busy(self) -> list[int]:
        """Indexes of the workers running a job (they have a work-horse) right now."""
        return [i for i, worker in enumerate(self.workers) if work_horses(worker.pid)]

    def replace_one_busy_worker(self, rng: random.Random) -> None:
        """Kill a worker in the middle of a job, with its work-horse, and start another in its place."""
        victim = rng.choice(wait_until(self.busy, 60, 0.02, "a worker busy on a job"))
        kill_with_horses(self.workers[victim])
        self.workers[victim] = spawn_refreshq(["worker", "--queue", "refresh"], self.env)

    def stop(self) -> None:
        for proc in [*self.workers, self.scheduler]:
            kill_with_horses(proc)


def leaves_done(conn: redis.Redis, task_id: str) -> int:
    return int(conn.hget(keys.task_stats(task_id), "leaves_done") or 0)


CHAOS_ENV = {
    "REFRESHQ_UPSTREAM_TIMEOUT": "2",   # hanging requests are cut and retried
    "REFRESHQ_RETRY_BASE": "0.2",       # the sweeper backs off quickly in a test
    "REFRESHQ_RETRY_MAX": "10",
    # The injected 429s fall on 2% of requests whatever the rate: faults, not a limit. Paced, each would pause
    # every worker for its Retry-After and back the learned rate off (tests/processes/test_pacing*.py); here each is
    # retried by the thread that got it, as the faults are meant.
    "REFRESHQ_UPSTREAM_RPS": "0",
}


@pytest.fixture
def chaos_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in CHAOS_ENV.items():
        monkeypatch.setenv(name, value)
    return {**env, **CHAOS_ENV}


def test_flaky_upstream_and_three_sigkills_end_with_exactly_the_upstream_data(
    conn: redis.Redis, chaos_env: dict[str, str]
) -> None:
    scale = 20_000
    rng = random.Random(7)
    with start_background(
        scale, latency_ms=5, fail_rate=0.05, rate_429=0.02, invalid_json_rate=0.02, hang_rate=0.002,
        hang_seconds=5, seed=11,
    ) as upstream:
        manager = SyncTaskManager(Settings.from_env(), conn, upstream={"kind": "http", "url": upstream.url})
        task_id = manager.create_full_refresh_task()
        fleet = Fleet(chaos_env)
        try:
            for _ in range(3):
                # Each kill after some more work is done (a random amount of it), on a worker mid-job.
                target = leaves_done(conn, task_id) + rng.randint(30, 150)
                wait_until(lambda t=target: leaves_done(conn, task_id) >= t, 120, 0.02, "more leaves staged")
                fleet.replace_one_busy_worker(rng)
            final = wait_until(
                lambda: (s := manager.get_task_status(task_id))["status"] in TERMINAL and s, 300, 0.2,
                "the chaotic refresh to end",
            )
        finally:
            fleet.stop()
        faults = upstream.stats()
    assert final["status"] == "SUCCEEDED", final
    assert faults["total"] > 3000
    assert final["statistics"]["hospitals_found"] == scale
    assert checksum(exported(conn)) == checksum(SampleDirectory(scale).all_hospitals())


def test_killing_the_embedded_server_mid_refresh_loses_nothing(short_dir: Path, env: dict[str, str]) -> None:
    server_env = {k: v for k, v in env.items() if k != "REDIS_URL"}
    server_env["REFRESHQ_DATA_DIR"] = str(short_dir / "srv")
    settings = Settings.from_env(server_env)
    scale = 15_000
    conn = connect(settings)
    server = EmbeddedServer(settings.server.data_dir)
    with start_background(scale, latency_ms=30) as upstream:
        manager = SyncTaskManager(settings, conn, upstream={"kind": "http", "url": upstream.url})
        task_id = manager.create_full_refresh_task()
        fleet = Fleet(server_env)
        try:
            wait_until(lambda: manager.get_task_status(task_id)["progress"] >= 20, 120, 0.1, "progress >= 20%")
            wait_for_aof(conn)  # what was written so far is on disk: the kill must not lose it
            pid = server.pid()
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: server.pid() != pid and server.ping(), 60, 0.1, "the server to be restarted")
            final = wait_until(
                lambda: (s := manager.get_task_status(task_id))["status"] in TERMINAL and s, 240, 0.2,
                "the refresh to end after the server restart",
            )
        finally:
            fleet.stop()
            conn.close()
    try:
        assert final["status"] == "SUCCEEDED", final
        assert final["statistics"]["hospitals_found"] == scale
        assert checksum(exported(connect(settings))) == checksum(SampleDirectory(scale).all_hospitals())
    finally:
        server.stop()


def test_a_sigkill_of_the_plan_job_while_it_walks_ahead_loses_and_duplicates_nothing(
    conn: redis.Redis, chaos_env: dict[str, str]
) -> None:
    """The worst moment for a full refresh's plan job: some provinces walked and handed to their jobs,
    the others not yet. Its worker and work-horse die; the plan job runs again (abandoned, retried by
    the scheduler), hands over the rest, and the refresh ends exact, every province published once."""
    scale = 5000
    with start_background(scale, latency_ms=60) as upstream:  # a walk of seconds: the kill lands inside it
        manager = SyncTaskManager(Settings.from_env(), conn, upstream={"kind": "http", "url": upstream.url})
        task_id = manager.create_full_refresh_task()
        fleet = Fleet(chaos_env)
        try:
            def planning_worker() -> list[int]:
                handed = conn.scard(keys.task_jobs(task_id)) - 1  # the plan job's id is in the set too
                running = {w.pid: w.get_current_job_id() for w in Worker.all(connection=conn)}
                return [i for i, proc in enumerate(fleet.workers)
                        if 1 <= handed < 34 and (running.get(proc.pid) or "").endswith("-plan")]

            [victim] = wait_until(planning_worker, 60, 0.01, "the plan job part-way through its walks")
            kill_with_horses(fleet.workers[victim])
            fleet.workers[victim] = spawn_refreshq(["worker", "--queue", "refresh"], chaos_env)
            final = wait_until(
                lambda: (s := manager.get_task_status(task_id))["status"] in TERMINAL and s, 240, 0.2,
                "the refresh to end after its plan job was killed",
            )
        finally:
            fleet.stop()
    assert final["status"] == "SUCCEEDED", final
    assert final["statistics"]["hospitals_found"] == scale
    assert checksum(exported(conn)) == checksum(SampleDirectory(scale).all_hospitals())
    published = store.published_provinces(conn)
    assert len(published) == 34 and {meta["version"] for meta in published.values()} == {task_id}
    assert sum(meta["records"] for meta in published.values()) == scale
