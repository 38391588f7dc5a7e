"""/api/v1/refreshes through Flask's test client: create (201, Location, idempotency), limits (429,
nothing enqueued), listing from the indexes (filters, pagination edges), read, ETag, cancel, resume, cleanup."""

from __future__ import annotations

import json
import threading

import pytest
import redis

from jobs import keys, queues
from jobs.refresh.manager import SyncTaskManager
from tests.support.api_helpers import Api, is_problem, make_api
from tests.support.helpers import drain


@pytest.fixture
def api(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, conn: redis.Redis, redis_url: str) -> Api:
    return make_api(env, monkeypatch, conn, redis_url)


def _queued(conn: redis.Redis) -> int:
    return int(queues.queue(conn, queues.REFRESH).count)


def test_create_answers_201_with_location_and_owner(api: Api) -> None:
    created = api.post("/refreshes", "operate", json={"kind": "province", "province": "广东"})
    assert created.status_code == 201
    task = created.get_json()
    assert created.headers["Location"] == f"/api/v1/refreshes/{task['task_id']}"
    assert task["owner"] == "operate-user" and task["kind"] == "province" and task["hospital_name"] == "广东省"
    assert task["status"] == "PENDING" and task["stalled"] is False
    again = api.get(created.headers["Location"].removeprefix("/api/v1"), "read")
    assert again.status_code == 200 and again.get_json()["task_id"] == task["task_id"]
    full = api.post("/refreshes", json={"kind": "full"})
    assert full.status_code == 201 and full.get_json()["owner"] == "admin-user"
    assert _queued(api.conn) == 2


@pytest.mark.parametrize(("body", "status", "says"), [
    (b"not json", 422, "JSON object"),
    (b"[1, 2]", 422, "JSON object"),
    (json.dumps({"kind": "weekly"}), 422, "kind 'weekly'"),
    (json.dumps({}), 422, "missing field 'kind'"),
    (json.dumps({"kind": "province"}), 422, "needs \"province\""),
    (json.dumps({"kind": "province", "province": "火星"}), 422, "unknown province"),
    (json.dumps({"kind": "full", "province": "广东"}), 422, "takes no"),
    (json.dumps({"kind": "full", "priority": 1}), 422, "unknown field 'priority'"),
])
def test_a_bad_body_is_422_and_enqueues_nothing(api: Api, body: bytes | str, status: int, says: str) -> None:
    response = api.post("/refreshes", data=body, content_type="application/json")
    assert says in is_problem(response, status)["detail"]
    assert _queued(api.conn) == 0 and api.conn.zcard(keys.TASKS_BY_CREATED) == 0


def test_an_idempotency_key_makes_a_retried_post_return_the_same_task(api: Api) -> None:
    key = {"Idempotency-Key": 'retry "1" 🚀'}
    first = api.post("/refreshes", "operate", json={"kind": "full"}, headers=key)
    second = api.post("/refreshes", "operate", json={"kind": "full"}, headers=key)
    assert first.status_code == 201 and second.status_code == 200
    assert second.headers["Idempotent-Replayed"] == "true"
    assert first.get_json()["task_id"] == second.get_json()["task_id"]
    assert _queued(api.conn) == 1
    # Another user's identical key is theirs alone; the same key for another request is refused.
    other = api.post("/refreshes", "other", json={"kind": "full"}, headers=key)
    assert other.status_code == 201 and other.get_json()["task_id"] != first.get_json()["task_id"]
    changed = api.post("/refreshes", "operate", json={"kind": "province", "province": "广东"}, headers=key)
    assert "was used for another request" in is_problem(changed, 422)["detail"]
    assert _queued(api.conn) == 2


def test_racing_copies_of_one_request_make_one_task(api: Api) -> None:
    answers: list[int] = []

    def post() -> None:
        client = api.app.test_client()
        answers.append(client.post("/api/v1/refreshes", json={"kind": "full"}, headers={
            "Authorization": f"Bearer {api.tokens['operate']}", "Idempotency-Key": "race"}).status_code)

    threads = [threading.Thread(target=post) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(answers) == [200] * 7 + [201]
    assert _queued(api.conn) == 1


def test_a_user_over_their_limits_gets_429_and_nothing_is_enqueued(api: Api) -> None:
    first = api.post("/refreshes", "limited", json={"kind": "full"})
    assert first.status_code == 201
    before = (_queued(api.conn), api.conn.zcard(keys.TASKS_BY_CREATED))
    refused = api.post("/refreshes", "limited", json={"kind": "full"})
    assert "limited-user" in is_problem(refused, 429)["detail"] and "pending" in refused.get_json()["detail"]
    assert int(refused.headers["Retry-After"]) > 0
    assert (_queued(api.conn), api.conn.zcard(keys.TASKS_BY_CREATED)) == before
    # Its one pending task starts: now it is over its running limit (1) instead.
    drain(api.conn)
    assert api.get(f"/refreshes/{first.get_json()['task_id']}").get_json()["status"] in ("RUNNING", "SUCCEEDED")
    # Other users are not limited by it.
    assert api.post("/refreshes", "operate", json={"kind": "full"}).status_code == 201


def test_the_running_limit_counts_running_tasks(api: Api) -> None:
    manager = api.app.extensions["refreshq.manager"]
    task_id = api.post("/refreshes", "limited", json={"kind": "province", "province": "北京"}).get_json()["task_id"]
    from jobs.refresh.records import RUNNING, transition

    assert transition(api.conn, task_id, ("PENDING",), RUNNING)
    assert api.conn.zcard(keys.tasks_with_status_of_owner(RUNNING, "limited-user")) == 1
    refused = api.post("/refreshes", "limited", json={"kind": "full"})
    assert "1 running (limit 1)" in is_problem(refused, 429)["detail"]
    assert manager.list_tasks(owner="limited-user")["total"] == 1


def test_listing_filters_by_status_kind_and_owner_from_the_indexes(api: Api) -> None:
    full = api.post("/refreshes", "operate", json={"kind": "full"}).get_json()["task_id"]
    province = api.post("/refreshes", "other", json={"kind": "province", "province": "北京"}).get_json()["task_id"]
    mine = api.post("/refreshes", "operate", json={"kind": "province", "province": "上海"}).get_json()["task_id"]
    api.post(f"/refreshes/{mine}/cancel", "operate")

    def ids(query: str) -> list[str]:
        response = api.get(f"/refreshes?{query}", "read")
        assert response.status_code == 200, response.data
        return [t["task_id"] for t in response.get_json()["items"]]

    assert ids("") == [mine, province, full]
    assert ids("order=asc") == [full, province, mine]
    assert ids("kind=province") == [mine, province]
    assert ids("owner=operate-user") == [mine, full]
    assert ids("owner=operate-user&kind=province") == [mine]
    assert ids("status=CANCELLED") == [mine]
    assert ids("status=PENDING&owner=operate-user") == [full]
    assert ids("status=PENDING&kind=province&owner=other-user") == [province]
    assert ids("owner=nobody") == []
    assert ids("sort=updated_at&kind=province") == [mine, province]
    assert api.conn.keys(keys.tasks_listing("*")) == []  # intersections are deleted with their page


def test_pagination_edges(api: Api) -> None:
    for _ in range(3):
        api.post("/refreshes", json={"kind": "full"})
    page = api.get("/refreshes?page=2&page_size=2").get_json()
    shape = (len(page["items"]), page["total"], page["pages"], page["has_prev"], page["has_next"])
    assert shape == (1, 3, 2, True, False)
    past = api.get("/refreshes?page=9&page_size=2").get_json()
    assert past["items"] == [] and past["total"] == 3 and past["has_prev"] and not past["has_next"]
    assert "page='0'" in is_problem(api.get("/refreshes?page=0"), 400)["detail"]
    assert "page_size='1000'" in is_problem(api.get("/refreshes?page_size=1000"), 400)["detail"]
    assert "whole number" in is_problem(api.get("/refreshes?page=x"), 400)["detail"]
    assert "status='DONE'" in is_problem(api.get("/refreshes?status=DONE"), 400)["detail"]
    assert "sort='name'" in is_problem(api.get("/refreshes?sort=name"), 400)["detail"]


def test_an_unknown_task_is_404_and_an_unchanged_one_304(api: Api) -> None:
    assert "no refresh task task_nope" in is_problem(api.get("/refreshes/task_nope"), 404)["detail"]
    is_problem(api.get("/refreshes/task_nope/provinces"), 404)
    is_problem(api.post("/refreshes/task_nope/cancel"), 404)
    task_id = api.post("/refreshes", json={"kind": "province", "province": "北京"}).get_json()["task_id"]
    first = api.get(f"/refreshes/{task_id}")
    etag = first.headers["ETag"]
    unchanged = api.get(f"/refreshes/{task_id}", headers={"If-None-Match": etag})
    assert unchanged.status_code == 304 and unchanged.data == b""
    drain(api.conn)
    changed = api.get(f"/refreshes/{task_id}", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.get_json()["status"] == "SUCCEEDED"
    provinces = api.get(f"/refreshes/{task_id}/provinces").get_json()
    assert [(p["code"], p["outcome"]) for p in provinces["items"]] == [("110000", "published")]
    assert provinces["items"][0]["leaves_done"] == provinces["items"][0]["leaves_total"] > 0


def test_operate_cancels_and_resumes_its_own_only(api: Api) -> None:
    task_id = api.post("/refreshes", "operate", json={"kind": "full"}).get_json()["task_id"]
    assert "belongs to 'operate-user'" in is_problem(api.post(f"/refreshes/{task_id}/cancel", "other"), 403)["detail"]
    is_problem(api.post(f"/refreshes/{task_id}/cancel", "read"), 403)
    cancelled = api.post(f"/refreshes/{task_id}/cancel", "operate")
    assert cancelled.status_code == 200 and cancelled.get_json()["status"] == "CANCELLED"
    assert "already CANCELLED" in is_problem(api.post(f"/refreshes/{task_id}/cancel", "operate"), 409)["detail"]
    is_problem(api.post(f"/refreshes/{task_id}/resume", "other"), 403)
    resumed = api.post(f"/refreshes/{task_id}/resume", "operate")
    assert resumed.status_code == 200 and resumed.get_json()["status"] == "PENDING"
    assert "only FAILED or CANCELLED" in is_problem(api.post(f"/refreshes/{task_id}/resume"), 409)["detail"]
    assert api.post(f"/refreshes/{task_id}/cancel", "admin").get_json()["status"] == "CANCELLED"


def test_cleanup_is_admin_only_and_checks_its_body(api: Api) -> None:
    task_id = api.post("/refreshes", json={"kind": "full"}).get_json()["task_id"]
    api.post(f"/refreshes/{task_id}/cancel")
    is_problem(api.post("/refreshes/cleanup", "operate", json={"older_than_days": 0}), 403)
    assert "older_than_days" in is_problem(api.post("/refreshes/cleanup", json={"older_than_days": "x"}), 422)["detail"]
    assert "RUNNING" in is_problem(api.post("/refreshes/cleanup", json={"older_than_days": 0, "statuses": ["RUNNING"]}),
                                   422)["detail"]
    removed = api.post("/refreshes/cleanup", json={"older_than_days": 0})
    assert removed.get_json() == {"removed": 1}
    is_problem(api.get(f"/refreshes/{task_id}"), 404)
    # Every index forgets it, the kind's and the owner's too.
    assert all(api.conn.zscore(k, task_id) is None for k in (
        keys.tasks_of_kind("full"), keys.tasks_of_owner("admin-user"),
        keys.tasks_with_status_of_owner("CANCELLED", "admin-user")))


def test_the_cli_owns_what_it_creates(api: Api, conn: redis.Redis) -> None:
    task_id = SyncTaskManager(conn=conn).create_full_refresh_task()
    assert api.get(f"/refreshes/{task_id}").get_json()["owner"] == "cli"
    assert [t["task_id"] for t in api.get("/refreshes?owner=cli").get_json()["items"]] == [task_id]
    # operate may not cancel the CLI's task, admin may
    is_problem(api.post(f"/refreshes/{task_id}/cancel", "operate"), 403)


def test_a_running_task_whose_progress_stands_still_is_flagged_stalled(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, conn: redis.Redis, redis_url: str
) -> None:
    from datetime import UTC, datetime, timedelta

    from jobs.refresh.records import transition

    api = make_api(env, monkeypatch, conn, redis_url, REFRESHQ_STALL_SECONDS="30")
    fresh, old = (api.post("/refreshes", json={"kind": "full"}).get_json()["task_id"] for _ in range(2))
    now = datetime.now(UTC)
    for task_id, started in ((fresh, now), (old, now - timedelta(seconds=31))):
        assert transition(conn, task_id, ("PENDING",), "RUNNING",
                          {"attempt_started_at": started.isoformat(timespec="seconds")})
    assert api.get(f"/refreshes/{fresh}").get_json()["stalled"] is False
    assert api.get(f"/refreshes/{old}").get_json()["stalled"] is True
    # Progress that moves clears it; a task that is not RUNNING is never stalled.
    conn.hset(keys.task(old), "progress_moved_ts", repr(now.timestamp()))
    assert api.get(f"/refreshes/{old}").get_json()["stalled"] is False
    conn.hset(keys.task(old), "progress_moved_ts", repr((now - timedelta(seconds=60)).timestamp()))
    assert [t["stalled"] for t in api.get("/refreshes").get_json()["items"]] == [True, False]
    assert transition(conn, old, ("RUNNING",), "FAILED")
    assert api.get(f"/refreshes/{old}").get_json()["stalled"] is False
