"""The workers' actions over the API (/api/v1/workers/suspend|resume|drain|stop|scale): the same as
`refreshq workers`, through Redis; a real worker process stopped and a real pool scaled from the API."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from rq import Worker

from jobs import keys, queues
from tests.support.api_helpers import Api, is_problem, make_api
from tests.support.helpers import refreshq_process, wait_until, worker_process


@pytest.fixture
def api(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, conn: redis.Redis, redis_url: str) -> Api:
    return make_api(env, monkeypatch, conn, redis_url)


def _worker_names(conn: redis.Redis) -> set[str]:
    return {w.name for w in Worker.all(connection=conn)}


def test_suspend_and_resume_a_queue_and_a_pool(api: Api, conn: redis.Redis) -> None:
    assert api.get("/workers").get_json()["suspended"] == {"queues": [], "pools": [], "rq_suspended": False}
    held = api.post("/workers/suspend", json={"queues": ["low"]}).get_json()
    assert held["queues"] == ["low"] and conn.sismember(keys.SUSPENDED_QUEUES, "low")
    assert api.post("/workers/suspend", json={"pool": "web-1"}).get_json()["pools"] == ["web-1"]
    assert api.get("/workers", "read").get_json()["suspended"]["queues"] == ["low"]
    assert api.post("/workers/resume", json={"queues": ["low"]}).get_json()["queues"] == []
    assert api.post("/workers/resume", json={}).get_json() == {"queues": [], "pools": [], "rq_suspended": False}
    everything = api.post("/workers/suspend", json={}).get_json()["queues"]
    assert everything == sorted(queues.ALL_QUEUES)
    assert "unknown queue nope" in is_problem(api.post("/workers/suspend", json={"queues": ["nope"]}), 422)["detail"]
    is_problem(api.post("/workers/suspend", json={"queues": "low"}), 422)
    is_problem(api.post("/workers/resume", json={"queue": ["low"]}), 422)  # an unknown field
    assert is_problem(api.post("/workers/suspend", "operate", json={}), 403)


def test_stop_and_drain_reach_a_real_worker(api: Api, conn: redis.Redis, env: dict[str, str]) -> None:
    assert "no worker named" in is_problem(api.post("/workers/stop", json={"worker": "ghost"}), 422)["detail"]
    assert "no pool named" in is_problem(api.post("/workers/drain", json={"pool": "ghost"}), 422)["detail"]
    with worker_process(env) as process:
        [name] = wait_until(lambda: _worker_names(conn) or None, 30, what="the worker registered")
        listed = api.get("/workers").get_json()
        assert [w["name"] for w in listed["items"]] == [name]
        assert api.post("/workers/stop", json={"worker": name}).get_json() == {"pools": [], "workers": [name]}
        assert process.wait(timeout=20) == 0
    with worker_process(env) as process:
        [name] = wait_until(lambda: _worker_names(conn) or None, 30, what="the second worker registered")
        assert api.post("/workers/drain", json={}).get_json()["workers"] == [name]
        assert process.wait(timeout=20) == 0


def test_scale_keeps_the_wanted_size_and_a_running_pool_converges(
    api: Api, conn: redis.Redis, env: dict[str, str], tmp_path: Path
) -> None:
    assert api.post("/workers/scale", json={"pool": "p", "processes": 2}).get_json() == {
        "pool": "p", "wanted": 2, "running": False}
    assert conn.get(keys.pool_wanted("p")) == b"2"
    is_problem(api.post("/workers/scale", json={"pool": "p", "processes": "2"}), 422)
    is_problem(api.post("/workers/scale", json={"pool": "p", "processes": 10_000}), 422)
    is_problem(api.post("/workers/scale", json={"processes": 1}), 422)
    with refreshq_process(["worker", "--queue", "low", "--processes", "1", "--pool", "p"], env, tmp_path / "pool.log"):
        wait_until(lambda: len(_worker_names(conn)) == 2, 60, what="the pool at its wanted size, 2")
        assert api.post("/workers/scale", json={"pool": "p", "processes": 1}).get_json()["running"] is True
        wait_until(lambda: len(_worker_names(conn)) == 1, 60, what="the pool scaled down to 1")
        [pool] = api.get("/workers").get_json()["pools"]
        assert pool["name"] == "p"
