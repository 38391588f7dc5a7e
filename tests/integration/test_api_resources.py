"""The API's other resources through Flask's test client: published data (stats, a province's pages, a
streamed export), named tasks and runs (owners, limits, odd text round-tripping), schedules, failed jobs,
workers and queues."""

from __future__ import annotations

import csv
import io
import json

import pytest
import redis

from jobs import keys, queues
from jobs.config import Settings
from jobs.duties.retries import RetryPolicy, sweep_failed_jobs
from jobs.refresh.manager import SyncTaskManager
from tests.support.api_helpers import Api, is_problem, make_api
from tests.support.helpers import drain, exported
from tests.support.named_helpers import drain_all

ODD = 'quote " apostrophe \' newline \n tab \t emoji 🚀 <b>x</b> 广东'


@pytest.fixture
def api(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, conn: redis.Redis, redis_url: str) -> Api:
    return make_api(env, monkeypatch, conn, redis_url)


@pytest.fixture
def published(api: Api) -> Api:
    """Two provinces (河北, 广东: 16 and 20 hospitals at this scale) refreshed and published."""
    for name in ("河北", "广东"):
        api.post("/refreshes", json={"kind": "province", "province": name})
    drain(api.conn)
    return api


def test_data_stats_and_a_province_a_page_at_a_time(published: Api) -> None:
    stats = published.get("/data/stats", "read").get_json()
    assert [p["code"] for p in stats["items"]] == ["130000", "440000"]
    assert stats["records"] == sum(p["records"] for p in stats["items"]) == len(exported(published.conn))
    everything = exported(published.conn, "130000")
    seen: list[dict[str, object]] = []
    page = 1
    while True:
        answer = published.get(f"/data/provinces/河北?page={page}&page_size=7", "read").get_json()
        assert answer["total"] == len(everything)
        seen += answer["items"]
        if not answer["has_next"]:
            break
        page += 1
    assert len(everything) > 7 and [h["id"] for h in seen] == [h["id"] for h in everything]
    assert len({h["id"] for h in seen}) == len(seen)
    by_code = published.get("/data/provinces/130000?page_size=1").get_json()
    assert by_code["items"][0]["id"] == everything[0]["id"]
    city = seen[0]["city"]
    in_city = published.get(f"/data/provinces/河北?city={city}&page_size=100").get_json()
    assert in_city["total"] == sum(1 for h in seen if h["city"] == city) > 0
    past = published.get("/data/provinces/河北?page=999").get_json()
    assert past["items"] == [] and past["total"] == len(everything)
    assert "unknown province" in is_problem(published.get("/data/provinces/火星"), 404)["detail"]
    is_problem(published.get("/data/provinces/河北?district=nowhere"), 404)


def test_export_streams_every_record(published: Api) -> None:
    lines = published.get("/data/export?format=jsonl").data.decode().splitlines()
    assert [json.loads(line) for line in lines] == exported(published.conn)
    response = published.get("/data/export?format=csv&province=广东")
    assert response.is_streamed and response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.data.decode())))
    assert [r["id"] for r in rows] == [h["id"] for h in exported(published.conn, "440000")]
    assert "format='xml'" in is_problem(published.get("/data/export?format=xml"), 400)["detail"]
    assert "format is required" in is_problem(published.get("/data/export"), 422)["detail"]


def test_named_tasks_run_with_their_owner_and_odd_text_round_trips(api: Api) -> None:
    listed = api.get("/tasks?category=flow", "read").get_json()
    assert {t["name"] for t in listed["items"]} >= {"t-step", "t-fail"} and listed["total"] == len(listed["items"])
    assert {t["name"] for t in api.get("/tasks?tag=fast").get_json()["items"]} == {"t-add", "t-fail"}
    one = api.get("/tasks/t-step").get_json()
    assert one["priority"] == "HIGH" and one["attempts"] == 0
    run = api.post("/tasks/t-step/run", "operate", json={"args": [ODD]})
    assert run.status_code == 201, run.data
    run_id = run.get_json()["id"]
    assert run.headers["Location"] == f"/api/v1/runs/{run_id}"
    assert run.get_json()["owner"] == "operate-user" and run.get_json()["state"] == "queued"
    drain_all(api.conn)
    done = api.get(f"/runs/{run_id}", "read").get_json()
    assert (done["state"], done["result"], done["task"]) == ("finished", ODD, "t-step")
    history = api.get("/tasks/t-step/history?limit=1&offset=0").get_json()
    assert history["total"] == 1 and history["items"][0]["job_id"] == run_id and history["limit"] == 1
    failing = api.post("/tasks/t-fail/run", json={"args": {"message": ODD}}).get_json()["id"]
    drain_all(api.conn)
    failed = api.get(f"/runs/{failing}").get_json()
    assert failed["state"] == "failed" and failed["error"] == f"ValueError: {ODD}" and failed["result"] is None


def test_a_bad_run_is_refused_and_enqueues_nothing(api: Api) -> None:
    def queued() -> int:
        return sum(queues.queue(api.conn, q).count for q in queues.ALL_QUEUES)

    assert "unknown task" in is_problem(api.post("/tasks/nope/run", json={}), 404)["detail"]
    assert "do not fit" in is_problem(api.post("/tasks/t-add/run", json={"args": [1]}), 422)["detail"]
    assert "expected int" in is_problem(api.post("/tasks/t-add/run", json={"args": ["a", 1]}), 422)["detail"]
    assert "JSON array" in is_problem(api.post("/tasks/t-add/run", json={"args": "1, 2"}), 422)["detail"]
    assert "unknown field" in is_problem(api.post("/tasks/t-add/run", json={"kwargs": {}}), 422)["detail"]
    is_problem(api.get("/runs/nope"), 404)
    other = queues.queue(api.conn, queues.LOW).enqueue("tests.support.job_functions.add", 1, 1)
    assert "not a named-task run" in is_problem(api.get(f"/runs/{other.id}"), 404)["detail"]
    assert queued() == 1
    is_problem(api.get("/tasks/t-add/history?limit=0"), 400)
    is_problem(api.get("/tasks/nope/history"), 404)


def test_runs_count_against_the_users_limits(api: Api) -> None:
    first = api.post("/tasks/t-add/run", "limited", json={"args": [1, 2]})
    assert first.status_code == 201
    refused = api.post("/tasks/t-add/run", "limited", json={"args": [1, 2]})
    assert "1 pending (limit 1)" in is_problem(refused, 429)["detail"] and refused.headers["Retry-After"]
    assert queues.queue(api.conn, queues.NORMAL).count == 1
    # A refresh task of the user counts against the same limits.
    is_problem(api.post("/refreshes", "limited", json={"kind": "full"}), 429)
    drain_all(api.conn)  # the run ends: the user has room again (its entry is dropped on the next check)
    again = api.post("/tasks/t-add/run", "limited", json={"args": [3, 4]})
    assert again.status_code == 201
    assert api.conn.zrange(keys.owner_runs("limited-user"), 0, -1) == [again.get_json()["id"].encode()]


def test_schedules_put_pause_resume_run_now_delete(api: Api) -> None:
    is_problem(api.get("/schedules/t-add"), 404)
    put = api.call("PUT", "/schedules/t-add", json={"interval": 3600, "args": [1, 2]})
    assert put.status_code == 200, put.data
    assert put.get_json()["trigger"] == "every 3600 s" and put.get_json()["next_run"]
    assert [s["name"] for s in api.get("/schedules", "read").get_json()["items"]] == ["t-add"]
    paused = api.post("/schedules/t-add/pause").get_json()
    assert paused["paused"] is True and paused["next_run"] is None
    assert api.post("/schedules/t-add/resume").get_json()["paused"] is False
    fired = api.post("/schedules/t-add/run-now")
    assert fired.status_code == 201 and fired.get_json()["run"]
    assert "still queued or running" in is_problem(api.post("/schedules/t-add/run-now"), 409)["detail"]
    default = api.call("PUT", "/schedules/t-daily", json={})
    assert default.get_json()["cron"] == "0 4 * * *"
    assert "cron" in is_problem(api.call("PUT", "/schedules/t-add", json={"cron": "61 * * * *"}), 422)["detail"]
    assert "no default schedule" in is_problem(api.call("PUT", "/schedules/t-add", json={}), 422)["detail"]
    assert "interval must be int" in is_problem(api.call("PUT", "/schedules/t-add", json={"interval": "1"}),
                                                422)["detail"]
    assert api.call("DELETE", "/schedules/t-add").status_code == 204
    is_problem(api.call("DELETE", "/schedules/t-add"), 404)
    is_problem(api.call("PUT", "/schedules/nope", json={"interval": 60}), 404)


def test_failed_jobs_list_show_retry_purge(api: Api) -> None:
    is_problem(api.get("/failed/nope"), 404)
    ids = []
    for _ in range(2):
        job = queues.queue(api.conn, queues.NORMAL).enqueue("tests.support.job_functions.broken")
        drain(api.conn, [queues.NORMAL])
        ids.append(job.id)
    assert sweep_failed_jobs(api.conn, RetryPolicy(base=0, factor=1, cap=0, max_retries=0), Settings.from_env()) == 2
    listed = api.get("/failed?page_size=1", "read").get_json()
    assert listed["total"] == 2 and len(listed["items"]) == 1 and listed["has_next"]
    shown = api.get(f"/failed/{ids[0]}").get_json()
    assert "ValidationError: bad input" in shown["traceback"]
    is_problem(api.post(f"/failed/{ids[0]}/retry", "operate"), 403)
    retried = api.post(f"/failed/{ids[0]}/retry").get_json()
    assert retried["outcome"] == f"requeued {ids[0]} on normal"
    assert api.call("DELETE", "/failed").get_json() == {"purged": 1}
    assert api.get("/failed").get_json()["total"] == 0


def test_workers_and_queues(api: Api, conn: redis.Redis) -> None:
    queues.queue(conn, queues.LOW).enqueue("tests.support.job_functions.add", 1, 1)
    SyncTaskManager(conn=conn).create_full_refresh_task()
    rows = {q["name"]: q for q in api.get("/queues", "read").get_json()["items"]}
    assert set(rows) == set(queues.ALL_QUEUES)
    assert rows["low"]["depth"] == 1 and rows["refresh"]["depth"] == 1 and rows["high"]["depth"] == 0
    assert 0 <= rows["low"]["oldest_job_age_seconds"] < 60 and rows["high"]["oldest_job_age_seconds"] is None
    assert api.get("/workers").get_json()["items"] == []
