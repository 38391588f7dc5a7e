"""The upstream belongs to the deployment: a worker configured for an upstream fetches from it alone and
refuses a task created for another (FAILED, nothing fetched or published); workers advertise their
upstream, so creating a task for another one is refused at once (exit 2, 422, nothing enqueued); a full
refresh asks its upstream at creation as a province refresh does; every task shows its upstream."""

from __future__ import annotations

import json
import re
import time
from contextlib import closing
from pathlib import Path

import pytest
import redis

from jobs import keys, queues
from jobs.config import Settings, UpstreamSettings
from jobs.errors import UpstreamError, UpstreamMismatchError
from jobs.refresh import records
from jobs.refresh.manager import SyncTaskManager
from jobs.upstream import build_upstream
from jobs.upstream.identity import advertise, advertised, same_upstream
from jobs.upstream.serve import start_background
from tests.support.api_helpers import Api, is_problem, make_api
from tests.support.auth_upstream import start_basic_auth
from tests.support.helpers import free_port, log_lines, run_cli, scheduler_running, wait_until, worker_process

SCALE = 3000
USER = "refresher"
PASSWORD = "dep-l0y-s3cr3t-77"  # in the workers' URL only: it must show nowhere
TOKEN = "tok-dep-l0y-9911"


def nothing_created(conn: redis.Redis) -> bool:
    return (conn.zcard(keys.TASKS_BY_CREATED) == 0 and queues.queue(conn, queues.REFRESH).count == 0
            and conn.hlen(keys.PUBLISHED) == 0)


# -- what "the same upstream" means ------------------------------------------------------------------


@pytest.mark.parametrize(("a", "b", "same"), [
    ({"kind": "http", "url": "http://127.0.0.1:8700/v1"}, {"kind": "http", "url": "HTTP://127.0.0.1:8700/v1/"}, True),
    ({"kind": "http", "url": "http://Dir.Example/v1"}, {"kind": "http", "url": "http://dir.example:80/v1"}, True),
    ({"kind": "http", "url": "https://dir.example/v1"}, {"kind": "http", "url": "https://u:p@dir.example:443/v1"},
     True),
    ({"kind": "http", "url": "http://dir.example/v1"}, {"kind": "http", "url": "https://dir.example/v1"}, False),
    ({"kind": "http", "url": "http://dir.example:8700/v1"}, {"kind": "http", "url": "http://dir.example:8701/v1"},
     False),
    ({"kind": "http", "url": "http://dir.example/v1"}, {"kind": "http", "url": "http://dir.example/v2"}, False),
    ({"kind": "llm", "base_url": "http://m.example/v1/", "model": "a"},
     {"kind": "llm", "base_url": "http://m.example/v1", "model": "a"}, True),
    ({"kind": "llm", "base_url": "http://m.example/v1", "model": "a"},
     {"kind": "llm", "base_url": "http://m.example/v1", "model": "b"}, False),
    ({"kind": "sample", "scale": 1000}, {"kind": "sample", "scale": 1000}, True),
    ({"kind": "sample", "scale": 1000}, {"kind": "sample", "scale": 4000}, False),
    ({"kind": "sample", "scale": 1000}, {"kind": "http", "url": "http://127.0.0.1:8700/v1"}, False),
])
def test_two_specs_are_the_same_upstream_when_they_name_the_same_data(
    a: dict[str, object], b: dict[str, object], same: bool
) -> None:
    assert same_upstream(a, b) is same and same_upstream(b, a) is same


def test_an_advertisement_lapses_without_heartbeats_and_a_worker_configured_for_none_makes_none(
    conn: redis.Redis,
) -> None:
    configured = Settings(upstream=UpstreamSettings(url=f"http://{USER}:{PASSWORD}@127.0.0.1:9/v1/"))
    now = time.time()
    assert advertise(conn, configured, now) is True
    assert advertised(conn, now + 1) == [{"kind": "http", "url": "http://127.0.0.1:9/v1"}]
    assert advertised(conn, now + 61) == []
    assert PASSWORD not in repr(conn.zrange(keys.UPSTREAM_WORKERS, 0, -1))
    assert advertise(conn, Settings(upstream=UpstreamSettings(sample_scale=SCALE)), now) is False


def test_a_client_fetches_with_the_settings_credentials_only_from_their_own_upstream() -> None:
    with start_basic_auth(SCALE, USER, PASSWORD) as own, start_background(SCALE, token=TOKEN) as other:
        configured = Settings(upstream=UpstreamSettings(url=own.url_with(USER, PASSWORD), token=TOKEN))
        # Spelled otherwise, it is still the settings' upstream: fetched with their credentials.
        spelled = own.url + "/"
        with closing(build_upstream({"kind": "http", "url": spelled}, configured)) as client:
            assert len(client.provinces()) == 34
        # Another upstream never gets them (neither the URL's password nor the token).
        with closing(build_upstream({"kind": "http", "url": other.url}, configured)) as client, \
                pytest.raises(UpstreamError, match="401"):
            client.provinces()
        assert other.counters.total >= 1
    assert own.server.accepted >= 1


# -- at creation ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_refresh_from_a_shell_without_the_workers_upstream_is_refused_and_publishes_nothing(
    env: dict[str, str], conn: redis.Redis
) -> None:
    """The issue's scenario: workers configured for HTTP, `refresh province 广东 --wait` from a shell
    without REFRESHQ_UPSTREAM_URL. It was created for the sample and published it over the province."""
    bare = {**env, "REFRESHQ_SAMPLE_SCALE": str(SCALE)}
    with start_background(SCALE) as upstream, worker_process({**env, "REFRESHQ_UPSTREAM_URL": upstream.url}):
        wait_until(lambda: advertised(conn), 30, what="the worker to advertise its upstream")
        outcomes = [run_cli("refresh", "province", "广东", "--wait", env=bare, timeout=120),
                    run_cli("refresh", "full", env=bare)]
        assert nothing_created(conn) and upstream.counters.total == 0
    for refused in outcomes:
        assert refused.returncode == 2, (refused.stdout, refused.stderr)
        assert "Traceback" not in refused.stderr and refused.stdout == ""
        assert f"the workers here fetch from {upstream.url}" in refused.stderr, refused.stderr
        assert f"upstream is the built-in sample (scale {SCALE})" in refused.stderr
        assert "set REFRESHQ_UPSTREAM_URL" in refused.stderr and "nothing was created" in refused.stderr


@pytest.mark.slow
def test_a_full_refresh_is_refused_at_creation_when_its_upstream_does_not_answer(
    env: dict[str, str], conn: redis.Redis
) -> None:
    closed = f"http://127.0.0.1:{free_port()}/v1"
    unreachable = {**env, "REFRESHQ_UPSTREAM_URL": closed, "REFRESHQ_UPSTREAM_ATTEMPTS": "2"}
    with start_background(SCALE, token=TOKEN) as upstream:
        wrong_token = {**env, "REFRESHQ_UPSTREAM_URL": upstream.url, "REFRESHQ_UPSTREAM_TOKEN": "not-" + TOKEN}
        outcomes = [(run_cli("refresh", "full", env=unreachable), closed, "ConnectError"),
                    (run_cli("refresh", "province", "广东", env=unreachable), closed, "ConnectError"),
                    (run_cli("refresh", "full", env=wrong_token), upstream.url, "401")]
    for refused, url, why in outcomes:
        assert refused.returncode == 1, (refused.stdout, refused.stderr)  # the upstream failed, not the input
        assert f"the upstream {url} did not list its provinces" in refused.stderr and why in refused.stderr
        assert "Traceback" not in refused.stderr and TOKEN not in refused.stderr
    assert nothing_created(conn)


@pytest.fixture
def api(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, conn: redis.Redis, redis_url: str) -> Api:
    return make_api(env, monkeypatch, conn, redis_url)


def test_the_api_refuses_a_refresh_for_an_upstream_no_live_worker_fetches_from(api: Api) -> None:
    workers = Settings(upstream=UpstreamSettings(url=f"http://{USER}:{PASSWORD}@127.0.0.1:9/v1"))
    advertise(api.conn, workers)
    for body in ({"kind": "full"}, {"kind": "province", "province": "广东"}):
        detail = is_problem(api.post("/refreshes", "operate", json=body), 422)["detail"]
        assert "the workers here fetch from http://127.0.0.1:9/v1;" in detail and PASSWORD not in detail
        assert "upstream is the built-in sample (scale 300)" in detail
    assert nothing_created(api.conn)
    # Once no worker advertises (stopped, their advertisements lapsed), creation proceeds: a worker's own
    # check is then the backstop.
    advertise(api.conn, workers, now=time.time() - 120)
    assert api.post("/refreshes", "operate", json={"kind": "full"}).status_code == 201


def test_the_api_refuses_a_full_refresh_whose_upstream_does_not_answer(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, conn: redis.Redis, redis_url: str
) -> None:
    closed = f"http://127.0.0.1:{free_port()}/v1"
    api = make_api(env, monkeypatch, conn, redis_url, REFRESHQ_UPSTREAM_URL=closed, REFRESHQ_UPSTREAM_ATTEMPTS="1")
    detail = is_problem(api.post("/refreshes", "operate", json={"kind": "full"}), 502)["detail"]  # Bad Gateway
    assert f"the upstream {closed} did not list its provinces" in detail
    assert nothing_created(conn)


def test_the_api_and_the_pages_show_each_tasks_upstream(api: Api) -> None:
    created = api.post("/refreshes", "operate", json={"kind": "province", "province": "广东"}).get_json()
    assert created["upstream"] == {"kind": "sample", "scale": 300}
    assert api.get(f"/refreshes/{created['task_id']}", "read").get_json()["upstream"] == created["upstream"]
    assert [t["upstream"] for t in api.get("/refreshes", "read").get_json()["items"]] == [created["upstream"]]
    bearer = {"Authorization": f"Bearer {api.tokens['read']}"}
    index = api.client.get("/", headers=bearer).get_data(as_text=True)
    assert "<th>Upstream</th>" in index
    assert '<td class="upstream">the built-in sample (scale 300)</td>' in index
    page = api.client.get(f"/refreshes/{created['task_id']}", headers=bearer).get_data(as_text=True)
    assert '<dd id="task-upstream">the built-in sample (scale 300)</dd>' in page


def test_a_task_for_an_upstream_no_live_worker_fetches_from_is_not_resumed(
    settings: Settings, conn: redis.Redis
) -> None:
    manager = SyncTaskManager(settings, conn, upstream={"kind": "sample", "scale": SCALE})
    task_id = manager.create_province_refresh_task("广东")
    assert records.transition(conn, task_id, ("PENDING",), "FAILED")
    queued = queues.queue(conn, queues.REFRESH).count
    advertise(conn, Settings(upstream=UpstreamSettings(url="http://127.0.0.1:9/v1")))
    with pytest.raises(UpstreamMismatchError) as refused:
        manager.resume_task(task_id)
    assert "the workers here fetch from http://127.0.0.1:9/v1; " in str(refused.value)
    assert manager.get_task_status(task_id)["status"] == "FAILED"
    assert queues.queue(conn, queues.REFRESH).count == queued


# -- in the worker: the backstop -------------------------------------------------------------------------


@pytest.mark.slow
def test_a_worker_refuses_a_task_for_another_upstream_fetching_and_publishing_nothing(
    env: dict[str, str], conn: redis.Redis, tmp_path: Path
) -> None:
    """Tasks created while no worker advertised (before the workers started, or with their advertisement
    lapsed): the worker configured for its own upstream fails them for good, naming both upstreams,
    without a request to either -- never the other one with its own credentials."""
    log = tmp_path / "worker.log"
    bare = {**env, "REFRESHQ_SAMPLE_SCALE": str(SCALE)}
    with start_basic_auth(SCALE, USER, PASSWORD) as own, start_background(SCALE) as other:
        for_sample = run_cli("refresh", "province", "广东", env=bare)
        for_other = run_cli("refresh", "full", env={**env, "REFRESHQ_UPSTREAM_URL": other.url})
        assert for_sample.returncode == 0 and for_other.returncode == 0, (for_sample.stderr, for_other.stderr)
        tasks = {for_sample.stdout.strip(): "the built-in sample (scale 3000)", for_other.stdout.strip(): other.url}
        asked_at_creation = other.counters.total  # the full refresh's check: is the upstream there?
        workers = {**env, "REFRESHQ_UPSTREAM_URL": own.url_with(USER, PASSWORD)}
        with worker_process(workers, log=log), scheduler_running(workers):
            ended = {t: wait_until(lambda t=t: (s := status_of(t, env))["status"] in ("FAILED", "SUCCEEDED") and s,
                                   120, 0.2, f"task {t} to end") for t in tasks}
        assert own.server.accepted == own.server.refused == 0 and other.counters.total == asked_at_creation
    assert conn.hlen(keys.PUBLISHED) == 0
    for task_id, theirs in tasks.items():
        status = ended[task_id]
        assert status["status"] == "FAILED", status
        message = status["error_message"]
        assert f"was created for {theirs}, but this worker fetches from {own.url}: refused" in message, message
        assert status["upstream"] == ({"kind": "sample", "scale": SCALE} if theirs != other.url
                                      else {"kind": "http", "url": other.url})
    # Refused once each: a permanent failure, not retried.
    assert len(log_lines(log, "UpstreamMismatchError: refresh task")) == len(tasks), log.read_text()
    shown = [log.read_text(), *(json.dumps(s, ensure_ascii=False) for s in ended.values())]
    assert not any(PASSWORD in text for text in shown)
    assert not any(PASSWORD.encode() in value for value in conn.zrange(keys.UPSTREAM_WORKERS, 0, -1))


def status_of(task_id: str, env: dict[str, str]) -> dict[str, object]:
    result = run_cli("status", task_id, "--json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


@pytest.mark.slow
def test_status_and_list_show_the_upstream_without_credentials(env: dict[str, str], conn: redis.Redis) -> None:
    with start_basic_auth(SCALE, USER, PASSWORD) as upstream:
        configured = {**env, "REFRESHQ_UPSTREAM_URL": upstream.url_with(USER, PASSWORD)}
        with worker_process(configured):
            done = run_cli("refresh", "province", "北京", "--wait", "--json", env=configured, timeout=120)
        assert done.returncode == 0, done.stderr
        task_id = json.loads(done.stdout)["task_id"]
        texts = {args: run_cli(*args, env=configured) for args in
                 (("status", task_id), ("status", task_id, "--json"), ("list",), ("list", "--json"))}
    assert all(r.returncode == 0 for r in texts.values()), {a: r.stderr for a, r in texts.items()}
    assert f"  upstream {upstream.url}\n" in texts[("status", task_id)].stdout
    assert json.loads(texts[("status", task_id, "--json")].stdout)["upstream"] == {"kind": "http", "url": upstream.url}
    row = next(line for line in texts[("list",)].stdout.splitlines() if line.startswith(task_id))
    assert re.search(rf"hospitals  {re.escape(upstream.url)}$", row), row
    assert json.loads(texts[("list", "--json")].stdout)["items"][0]["upstream"]["url"] == upstream.url
    assert not any(PASSWORD in r.stdout + r.stderr for r in texts.values())


@pytest.mark.slow
def test_the_demo_refreshes_the_sample_whatever_upstream_the_shell_names(env: dict[str, str]) -> None:
    """Its workers are started configured for no upstream: ones configured for this shell's would refuse
    the demo's sample task."""
    shell = {**env, "REFRESHQ_UPSTREAM_URL": "http://127.0.0.1:9/v1"}
    demo = run_cli("demo", "--scale", "0", "--workers", "1", env=shell, timeout=120)
    assert demo.returncode == 0, (demo.stdout, demo.stderr)
    assert "SUCCEEDED" in demo.stdout + demo.stderr
