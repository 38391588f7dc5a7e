"""What the API takes has bounds (web/api/bounds.py, web/wsgi.py, jobs/named/arguments.py): a body of at
most 1 MiB (413 before it is read), JSON only (415), nested at most 64 deep (422, never a 500), only the
query parameters a route names (400), arguments of runs and schedules of at most 64 KiB whichever way
they come, and error texts cut short however long the input they quote."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import httpx
import pytest
import redis

from jobs import keys, queues, tokens
from jobs.errors import TaskArgumentsError
from jobs.named import runs
from jobs.named.arguments import MAX_ARGUMENTS_BYTES
from tests.integration.test_api_auth import ROUTES
from tests.support.api_helpers import Api, is_problem, make_api
from tests.support.helpers import run_cli, stored_keys
from tests.support.named_helpers import registry
from tests.support.web_helpers import web_process
from web.api.bounds import MAX_BODY_BYTES

JSON = {"Content-Type": "application/json"}


@pytest.fixture
def api(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, conn: redis.Redis, redis_url: str) -> Api:
    return make_api(env, monkeypatch, conn, redis_url)


def _problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["Content-Type"].startswith("application/problem+json"), response.headers
    body: dict[str, object] = response.json()
    assert body["status"] == status and isinstance(body["detail"], str) and len(body["detail"]) < 1200
    return body


def _chunks(total: int) -> Iterator[bytes]:
    yield b'{"kind": "full", "pad": "'
    for _ in range(total // 65536):
        yield b"a" * 65536
    yield b'"}'


@pytest.mark.slow
def test_bodies_too_large_too_deep_or_not_json_are_refused_by_the_real_server(
    env: dict[str, str], conn: redis.Redis
) -> None:
    token = {"Authorization": f"Bearer {tokens.create(conn, 'poster', 'operate')[0]}"}
    with web_process(env) as url, httpx.Client(base_url=f"{url}/api/v1", headers=token, timeout=30) as http:
        before = stored_keys(conn)
        big = http.post("/refreshes", content=b'{"kind": "full", "pad": "' + b"a" * 10_000_000 + b'"}', headers=JSON)
        assert "1 MiB" in str(_problem(big, 413)["detail"])
        _problem(http.post("/refreshes", content=_chunks(2 * MAX_BODY_BYTES), headers=JSON), 413)  # chunked
        deep = _problem(http.post("/refreshes", content=b"[" * 100_000 + b"]" * 100_000, headers=JSON), 422)
        assert "nests deeper than 64" in str(deep["detail"])
        nested = {"kind": "full"}
        for _ in range(70):
            nested = {"a": nested}
        _problem(http.post("/refreshes", json=nested), 422)
        _problem(http.post("/refreshes", content=b'{"kind": "full"}', headers={"Content-Type": "text/plain"}), 415)
        _problem(http.post("/refreshes", content=b'{"kind": "full"}'), 415)  # no Content-Type at all
        _problem(http.put("/schedules/cleanup", content=b"interval=60",
                          headers={"Content-Type": "application/x-www-form-urlencoded"}), 415)
        # Exactly 1 MiB is a body like any other: read, and refused for what it says.
        padding = MAX_BODY_BYTES - len(b'{"kind": "full", "pad": ""}')
        whole = http.post("/refreshes", content=b'{"kind": "full", "pad": "' + b"a" * padding + b'"}', headers=JSON)
        assert "unknown field 'pad'" in str(_problem(whole, 422)["detail"])
        assert stored_keys(conn) == before  # nothing created by any of them
        assert http.get(f"{url}/healthz").status_code == 200
        assert http.post("/refreshes", json={"kind": "full"}).status_code == 201


def test_every_api_route_names_its_query_parameters(api: Api) -> None:
    routes = [r for r in api.app.url_map.iter_rules() if r.rule.startswith("/api/v1/")]
    assert len(routes) >= 35
    for rule in routes:
        assert hasattr(api.app.view_functions[rule.endpoint], "query_parameters"), rule.rule


@pytest.mark.parametrize(("method", "path", "least"), ROUTES)
def test_an_unknown_query_parameter_is_400_on_every_route(api: Api, method: str, path: str, least: str) -> None:
    path = re.sub(r"<(\w+)>", lambda m: "t-add" if m.group(1) == "name" else "x", path)
    before = stored_keys(api.conn)
    refused = api.call(method, f"{path}?page_sise=2", json={})
    assert "unknown query parameter 'page_sise'" in is_problem(refused, 400)["detail"]
    assert stored_keys(api.conn) == before
    # Authentication still comes first: a stranger learns nothing about the route.
    is_problem(api.call(method, f"{path}?page_sise=2", None, json={}), 401)


def test_the_query_parameters_the_readme_names_are_taken(api: Api) -> None:
    for path in ("/refreshes?status=PENDING&kind=full&owner=x&sort=updated_at&order=asc&page=1&page_size=5",
                 "/tasks?category=math&tag=fast&page=1", "/tasks/t-add/history?limit=5&offset=0",
                 "/metrics?window=7d", "/data/stats?page=1&page_size=10", "/schedules?page=1", "/failed?page_size=3",
                 "/workers?page=1", "/queues?page_size=2"):
        assert api.get(path, "read").status_code == 200, path


def test_error_texts_quoting_the_input_are_cut_short(api: Api) -> None:
    long_name = "广东" + "x" * 900_000  # the body stays under 1 MiB
    refused = api.post("/refreshes", json={"kind": "province", "province": long_name})
    detail = is_problem(refused, 422)["detail"]
    assert len(detail) < 1200 and "more characters" in detail
    missing = is_problem(api.get("/data/provinces/" + "x" * 100_000, "read"), 404)
    assert len(missing["detail"]) < 1200 and len(missing["instance"]) < 400


def test_run_and_schedule_arguments_over_64_kib_are_refused_every_way(
    api: Api, tenv: dict[str, str], conn: redis.Redis
) -> None:
    huge = ["a" * 70_000, 1]
    before = stored_keys(conn)
    ran = is_problem(api.post("/tasks/t-add/run", json={"args": huge}), 422)["detail"]
    assert "at most 65,536 (64 KiB)" in ran, ran
    put = is_problem(api.call("PUT", "/schedules/t-add", json={"interval": 60, "args": huge}), 422)["detail"]
    assert "at most 65,536" in put
    with pytest.raises(TaskArgumentsError, match="64 KiB"):
        runs.enqueue_task(conn, registry().get("t-add"), huge, modules=registry().modules)
    cli = run_cli("tasks", "run", "t-add", "--args", json.dumps(huge), env=tenv)
    assert cli.returncode == 2 and "at most 65,536" in cli.stderr, cli.stderr[-500:]
    schedule = run_cli("schedule", "add", "t-add", "--interval", "60", "--args", json.dumps(huge), env=tenv)
    assert schedule.returncode == 2 and "at most 65,536" in schedule.stderr, schedule.stderr[-500:]
    assert stored_keys(conn) == before
    assert queues.queue(conn, queues.NORMAL).count == 0 and not conn.exists(keys.SCHEDULES)
    # The bound is the arguments' compact JSON, `[["label"],{}]`: 64 KiB exactly is taken, a byte more is not.
    label = "a" * (MAX_ARGUMENTS_BYTES - len('[[""],{}]'))
    assert api.post("/tasks/t-step/run", json={"args": [label]}).status_code == 201
    is_problem(api.post("/tasks/t-step/run", json={"args": [label + "a"]}), 422)
