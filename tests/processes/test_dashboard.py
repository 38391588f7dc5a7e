"""rq-dashboard as refreshq embeds it, over real HTTP (waitress, or `refreshq web`) against real workers:
every view answers while they are busy, nothing it does writes pickle, its actions are POST-only and
same-origin, and what it renders escapes stored text."""

from __future__ import annotations

import base64
import json
import re
import subprocess
from collections.abc import Iterator

import httpx
import pytest
import redis
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from jobs import queues
from jobs.config import Settings
from jobs.refresh.manager import SyncTaskManager
from jobs.upstream.serve import RunningUpstream
from tests.support.helpers import REFRESHQ, drain, free_port, get_when_up, wait_until, worker_process
from tests.support.web_helpers import (
    MARKUP_CODE,
    MARKUP_NAME,
    MarkupNamedDirectory,
    busy_province_jobs,
    failed_job,
    markup_upstream,
    pickled_values,
    same_origin,
    served,
)
from tests.support.web_helpers import value_count as scanned_values
from web.app import create_app
from web.dashboard.templates import PatchError, patched_source
from web.dashboard.views import REGISTRIES

REFRESH_SCALE = 400


@pytest.fixture
def gated_upstream() -> Iterator[tuple[RunningUpstream, MarkupNamedDirectory]]:
    with markup_upstream(REFRESH_SCALE) as gated:
        yield gated


@pytest.fixture
def base_url(settings: Settings, redis_url: str) -> Iterator[str]:
    with served(create_app(settings, redis_url)) as url:
        yield url


def test_every_view_answers_while_workers_are_busy_on_a_refresh(
    env: dict[str, str], conn: redis.Redis, settings: Settings,
    gated_upstream: tuple[RunningUpstream, MarkupNamedDirectory],
) -> None:
    running, _directory = gated_upstream
    port = free_port()
    web = subprocess.Popen([REFRESHQ, "web", "--port", str(port)], env=env, stderr=subprocess.DEVNULL)
    failed = failed_job(conn, queues.LOW)
    manager = SyncTaskManager(settings, conn, upstream={"kind": "http", "url": running.url})
    try:
        base = f"http://127.0.0.1:{port}"
        get_when_up(f"{base}/healthz")
        with worker_process(env), worker_process(env):
            # The province with markup in its name on one worker, any of the full refresh's on the other
            # (a full refresh walks its provinces first and starts the largest: 北京 is not among them).
            manager.create_province_refresh_task(MARKUP_CODE)
            wait_until(lambda: len(busy_province_jobs(conn, 1)) == 1, what="the markup province's job running")
            manager.create_full_refresh_task()
            busy = busy_province_jobs(conn, 2)
            with httpx.Client(base_url=base, timeout=10) as client:
                _check_every_view(client, busy, failed.id)
                # A busy worker's job deleted under it: the workers list still answers.
                assert client.post(f"/rq/job/{busy[0]}/delete", headers=same_origin(base)).status_code == 200
                workers = client.get("/rq/0/data/workers.json")
                assert workers.status_code == 200
                gone = [w["current_job"] for w in workers.json()["workers"] if w["current_job"] != "idle"]
                assert {"job_id": busy[0], "description": None, "created_at": None, "call_string": busy[0]} in gone
    finally:
        web.terminate()
        web.wait(timeout=20)


def _check_every_view(client: httpx.Client, busy: list[str], failed_id: str) -> None:
    pages = ["/rq/", "/rq/0/view/queues", "/rq/0/view/workers", "/rq/0/data/queues.json", "/rq/0/view/jobs"]
    for queue in queues.ALL_QUEUES:
        for registry in REGISTRIES:
            for order in ("asc", "dsc"):
                pages += [f"/rq/0/view/jobs/{queue}/{registry}/8/{order}/1",
                          f"/rq/0/data/jobs/{queue}/{registry}/8/{order}/1.json"]
    for job_id in [*busy, failed_id]:
        pages += [f"/rq/0/view/job/{job_id}", f"/rq/0/data/job/{job_id}.json"]
    for page in pages:
        response = client.get(page, follow_redirects=True)
        assert response.status_code == 200, (page, response.status_code, response.text[:300])

    workers = client.get("/rq/0/data/workers.json").json()["workers"]
    current = [w["current_job"] for w in workers if w["state"] == "busy"]
    assert {c["job_id"] for c in current} >= set(busy), workers
    assert all(c["description"].startswith("refresh ") for c in current)
    # The JSON keeps the upstream's names exact: escaping is the pages' business.
    markup_job = next(j for j in busy if f"-p{MARKUP_CODE}-" in j)
    info = client.get(f"/rq/0/data/job/{markup_job}.json").json()
    assert info["status"] == "started" and info["description"].endswith(f": {MARKUP_NAME}")
    started = client.get(f"/rq/0/data/jobs/{queues.REFRESH}/started/8/asc/1.json").json()
    assert {j["id"] for j in started["jobs"]} >= set(busy)
    queued = client.get(f"/rq/0/data/jobs/{queues.REFRESH}/queued/8/asc/1.json").json()
    assert queued["jobs"] and queued["pagination"]["num_pages"] >= 1  # the rest of the 34 provinces wait


def test_unknown_things_and_bad_pages_answer_404_or_400(conn: redis.Redis, base_url: str) -> None:
    failed = failed_job(conn)
    expected = {
        "/rq/0/view/job/nope": 404, "/rq/0/data/job/nope.json": 404,
        "/rq/0/view/jobs/nope/queued/8/asc/1": 404, "/rq/0/data/jobs/nope/queued/8/asc/1.json": 404,
        "/rq/0/view/jobs/normal/nope/8/asc/1": 404, "/rq/0/data/jobs/normal/nope/8/asc/1.json": 404,
        "/rq/0/data/jobs/normal/failed/abc/asc/1.json": 400, "/rq/0/data/jobs/normal/failed/8/asc/x.json": 400,
        "/rq/0/data/jobs/normal/failed/0/asc/1.json": 400, "/rq/0/data/jobs/normal/failed/8/asc/0.json": 400,
        "/rq/0/data/jobs/normal/failed/8/asc/-1.json": 400, "/rq/0/data/jobs/normal/failed/9999/asc/1.json": 400,
        "/rq/0/data/jobs/normal/failed/8/sideways/1.json": 400, "/rq/0/view/jobs/normal/failed/0/asc/1": 400,
        "/rq/0/data/jobs/normal/failed/8/asc/2.json": 404, "/rq/0/view/jobs/normal/failed/8/asc/2": 404,
        "/rq/0/data/jobs/normal/queued/8/asc/2.json": 404,
        "/rq/1/view/queues": 404, "/rq/7/data/workers.json": 404, "/rq/0/view/nothing": 404,
        # what exists still answers
        "/rq/0/data/jobs/normal/failed/8/asc/1.json": 200, "/rq/0/data/jobs/normal/queued/8/asc/1.json": 200,
        f"/rq/0/view/job/{failed.id}": 200,
    }
    with httpx.Client(base_url=base_url, timeout=10) as client:
        got = {path: client.get(path).status_code for path in expected}
        assert got == expected
        assert client.get("/rq/0/data/job/nope.json").json() == {"status": "ERROR", "error": "no job nope"}
        assert client.get("/rq/0/view/job/nope").headers["Content-Type"].startswith("text/plain")
        headers = same_origin(base_url)
        for action in ("/rq/job/nope/requeue", "/rq/job/nope/delete", "/rq/requeue/nope",
                       "/rq/queue/nope/failed/empty", "/rq/queue/normal/nope/empty", "/rq/queue/nope/compact"):
            assert client.post(action, headers=headers).status_code == 404, action
        finished = queues.queue(conn, queues.NORMAL).enqueue("tests.support.job_functions.add", 1, 2)
        drain(conn, [queues.NORMAL])
        assert client.post(f"/rq/job/{finished.id}/requeue", headers=headers).status_code == 409


@pytest.mark.parametrize("how", ["requeue", "requeue all", "requeue in the job view"])
def test_a_requeue_through_the_dashboard_leaves_no_pickle(conn: redis.Redis, base_url: str, how: str) -> None:
    job = failed_job(conn)
    assert pickled_values(conn) == []
    with httpx.Client(base_url=base_url, timeout=10, headers=same_origin(base_url)) as client:
        if how == "requeue all":
            response = client.post(f"/rq/requeue/{queues.NORMAL}")
            assert response.json() == {"status": "OK", "count": 1}
        else:
            if how == "requeue in the job view":  # the page's JSON the Requeue button depends on
                assert client.get(f"/rq/0/data/job/{job.id}.json").json()["status"] == "failed"
            response = client.post(f"/rq/job/{job.id}/requeue")
            assert response.json() == {"status": "OK"}
    assert scanned_values(conn) > 20
    assert pickled_values(conn) == []
    requeued = Job.fetch(job.id, connection=conn, serializer=JSONSerializer)
    assert requeued.get_status() == JobStatus.QUEUED
    assert requeued.meta == {"region": MARKUP_NAME, "attempt": 1}
    assert job.id in queues.queue(conn, queues.NORMAL).get_job_ids()

    conn.set("test:flaky-ok", "1")
    drain(conn, [queues.NORMAL])  # it runs again, on a real worker
    done = Job.fetch(job.id, connection=conn, serializer=JSONSerializer)
    assert done.get_status() == JobStatus.FINISHED and done.return_value() == "ok"
    assert done.meta == {"region": MARKUP_NAME, "attempt": 1}
    assert pickled_values(conn) == []


def test_the_scan_finds_what_rq_dashboards_own_requeue_leaves(conn: redis.Redis) -> None:
    """The scan above can fail: rq-dashboard's requeue (pickle by default) leaves a pickled meta."""
    from rq import requeue_job

    job = failed_job(conn)
    requeue_job(job.id, connection=conn)  # what rq-dashboard 0.9's requeue route calls
    assert any(found.startswith(f"rq:job:{job.id}") for found in pickled_values(conn))


def test_delete_and_empty_work_on_json_jobs(conn: redis.Redis, base_url: str) -> None:
    doomed, other = failed_job(conn), failed_job(conn, key="test:other")
    queued = [queues.queue(conn, queues.LOW).enqueue("tests.support.job_functions.add", i, 1) for i in range(3)]
    with httpx.Client(base_url=base_url, timeout=10, headers=same_origin(base_url)) as client:
        assert client.post(f"/rq/job/{doomed.id}/delete").json() == {"status": "OK"}
        assert not Job.exists(doomed.id, connection=conn)
        assert FailedJobRegistry(queues.NORMAL, connection=conn).get_job_ids() == [other.id]
        assert client.post(f"/rq/queue/{queues.NORMAL}/failed/empty").json() == {"status": "OK"}
        assert FailedJobRegistry(queues.NORMAL, connection=conn).get_job_ids() == []
        assert not Job.exists(other.id, connection=conn)
        assert client.post(f"/rq/queue/{queues.LOW}/compact").json() == {"status": "OK"}
        assert queues.queue(conn, queues.LOW).get_job_ids() == [j.id for j in queued]
        assert client.post(f"/rq/queue/{queues.LOW}/queued/empty").json() == {"status": "OK"}
        assert queues.queue(conn, queues.LOW).count == 0
    assert pickled_values(conn) == []


def test_compact_drops_only_dead_entries_in_place_and_answers_an_empty_queue(
    conn: redis.Redis, base_url: str
) -> None:
    low = queues.queue(conn, queues.LOW)
    first, gone, last = (low.enqueue("tests.support.job_functions.add", i, 1) for i in range(3))
    conn.delete(gone.key)  # its entry stays in the queue: a dead entry
    with httpx.Client(base_url=base_url, timeout=10, headers=same_origin(base_url)) as client:
        assert client.post(f"/rq/queue/{queues.LOW}/compact").json() == {"status": "OK"}
        assert low.get_job_ids() == [first.id, last.id]
        assert [k for k in conn.scan_iter("rq:queue:_compact:*")] == []  # no copy of the queue left anywhere
        assert queues.queue(conn, queues.HIGH).count == 0
        empty = client.post(f"/rq/queue/{queues.HIGH}/compact")  # RQ's compact: RENAME of no key, a 500
        assert (empty.status_code, empty.json()) == (200, {"status": "OK"})


def _state(conn: redis.Redis) -> tuple[object, ...]:
    return (
        sorted(FailedJobRegistry(queues.NORMAL, connection=conn).get_job_ids()),
        {name: queues.queue(conn, name).get_job_ids() for name in queues.ALL_QUEUES},
        sorted(k for k in conn.scan_iter("rq:job:*")),
    )


def test_mutating_routes_refuse_get_other_origins_and_no_password(
    env: dict[str, str], conn: redis.Redis, redis_url: str
) -> None:
    settings = Settings.from_env({**env, "REFRESHQ_WEB_PASSWORD": "pw"})
    job = failed_job(conn)
    queues.queue(conn, queues.LOW).enqueue("tests.support.job_functions.add", 1, 1)
    actions = [f"/rq/job/{job.id}/requeue", f"/rq/job/{job.id}/delete", f"/rq/requeue/{queues.NORMAL}",
               f"/rq/queue/{queues.NORMAL}/failed/empty", f"/rq/queue/{queues.LOW}/queued/empty",
               f"/rq/queue/{queues.LOW}/compact"]
    auth = {"Authorization": "Basic " + base64.b64encode(b"admin:pw").decode()}
    before = _state(conn)
    with served(create_app(settings, redis_url)) as base, httpx.Client(base_url=base, timeout=10) as client:
        own = same_origin(base)
        refused = {
            "cross-origin": {**auth, "Origin": "http://evil.example", "Referer": "http://evil.example/x"},
            "cross-site fetch": {**auth, **own, "Sec-Fetch-Site": "cross-site"},
            "same-site fetch": {**auth, **own, "Sec-Fetch-Site": "same-site"},
            "opaque origin": {**auth, "Origin": "null"},
            "other port": {**auth, "Origin": re.sub(r":\d+$", ":1", base)},
            "no origin at all": auth,
        }
        for action in actions:
            for method in ("GET", "HEAD", "PUT", "DELETE"):
                assert client.request(method, action, headers={**auth, **own}).status_code == 405, (method, action)
            assert client.post(action, headers=own).status_code == 401, action
            for why, headers in refused.items():
                response = client.post(action, headers=headers)
                assert response.status_code == 403, (why, action, response.status_code)
        assert _state(conn) == before  # nothing changed
        assert client.get("/rq/0/view/workers", headers=auth).status_code == 200
        assert client.get("/rq/0/view/workers").status_code == 401  # read-only views need it too
        # The dashboard's own POSTs pass: by Origin, and by the browser's own Sec-Fetch-Site verdict.
        assert client.post(f"/rq/queue/{queues.LOW}/compact", headers={**auth, **own}).status_code == 200
        response = client.post(f"/rq/job/{job.id}/requeue", headers={**auth, "Sec-Fetch-Site": "same-origin"})
        assert response.status_code == 200
    assert job.get_status(refresh=True) == JobStatus.QUEUED


def test_pages_escape_stored_text_and_run_only_nonced_script(conn: redis.Redis, settings: Settings,
                                                             redis_url: str) -> None:
    job = failed_job(conn)
    client = create_app(settings, redis_url).test_client()
    for page in (f"/rq/0/view/job/{job.id}", "/rq/0/view/jobs/normal/failed/8/asc/1", "/rq/0/view/workers",
                 "/rq/"):
        response = client.get(page)
        assert response.status_code == 200
        policy = response.headers["Content-Security-Policy"]
        script_src = next(d for d in policy.split(";") if d.strip().startswith("script-src"))
        assert "'unsafe-inline'" not in script_src and "frame-ancestors 'none'" in policy
        nonce = re.search(r"'nonce-([^']+)'", script_src)
        assert nonce is not None
        html = response.get_data(as_text=True)
        inline = re.findall(r"<script(?![^>]*\bsrc=)(?![^>]*text/template)([^>]*)>", html)
        assert inline == [f' nonce="{nonce.group(1)}" type="text/javascript"'], inline
        templates = re.findall(r'<script name="[\w-]+" type="text/template">(.*?)</script>', html, re.S)
        assert templates and all("<%=" not in t for t in templates)  # every interpolation escapes
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    again = client.get(f"/rq/0/view/job/{job.id}").headers["Content-Security-Policy"]
    assert again != policy  # a new nonce per response
    info = client.get(f"/rq/0/data/job/{job.id}.json").get_json()
    assert info["description"] == f"refresh test: {MARKUP_NAME}"
    assert json.loads(info["metadata"])["region"] == MARKUP_NAME


def test_a_template_that_no_longer_fits_fails_loudly() -> None:
    with pytest.raises(PatchError, match=r"base\.html"):
        patched_source("base.html", "<html>another rq-dashboard</html>")
    with pytest.raises(PatchError, match=r"job\.html"):
        patched_source("job.html", "no templates here")
