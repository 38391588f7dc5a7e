"""The observability reports over the API (/api/v1/metrics, /health, /performance, /alerts) and the health
page: the same documents the CLI prints, from the same Redis state; /health answers 503 when critical."""

from __future__ import annotations

import json
import time

import pytest
import redis

from bench.observe_seed import FakeRun, fake_run
from jobs import queues
from jobs.config import Settings
from jobs.observe import alert_state
from jobs.statuses import FAILED, SUCCEEDED
from scheduler import Scheduler
from tests.support.api_helpers import PASSWORD, Api, is_problem, make_api
from tests.support.helpers import run_cli


@pytest.fixture
def api(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, conn: redis.Redis, redis_url: str) -> Api:
    return make_api(env, monkeypatch, conn, redis_url)


def _cli_json(env: dict[str, str], *args: str) -> dict[str, object]:
    result = run_cli(*args, "--json", env={**env, "REFRESHQ_WEB_PASSWORD": PASSWORD})
    assert result.returncode in (0, 1, 3), result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_metrics_and_performance_are_the_cli_reports(api: Api, env: dict[str, str]) -> None:
    now = time.time()
    fake_run(api.conn, FakeRun("t_ok", "full", now - 300, now - 290, now - 10, SUCCEEDED, hospitals=100))
    fake_run(api.conn, FakeRun("t_bad", "full", now - 200, now - 190, now - 5, FAILED, hospitals=0))
    day = api.get("/metrics", "read").get_json()
    assert day["tasks"]["succeeded"] == 1 and day["tasks"]["failed"] == 1 and day["success_rate"] == 50.0
    cli = _cli_json(env, "metrics")
    moments = ("since", "generated_at")  # when each report was made
    assert {k: v for k, v in day.items() if k not in moments} == {k: v for k, v in cli.items() if k not in moments}
    assert api.get("/metrics?window=7d").get_json()["window"] == "7d"
    assert "window='1y' is not valid" in is_problem(api.get("/metrics?window=1y"), 400)["detail"]
    performance = api.get("/performance", "read").get_json()
    full = next(row for row in performance["kinds"] if row["kind"] == "full")
    assert full["runs"] == 2 and full["success_rate"] == 50.0


def test_health_is_503_when_critical_and_200_when_not(api: Api, conn: redis.Redis) -> None:
    critical = api.get("/health", "read")  # no scheduler has ever run
    assert critical.status_code == 503 and critical.get_json()["status"] == "critical"
    assert any(i["rule"] == "no_scheduler" for i in critical.get_json()["issues"])
    Scheduler(conn, duties=[]).run_once()
    ok = api.get("/health", "read")
    assert ok.status_code == 200 and ok.get_json()["status"] == "ok" and ok.get_json()["issues"] == []
    queues.queue(conn, queues.LOW).enqueue("tests.support.job_functions.add", 1, 1)  # queued, and no worker
    again = api.get("/health")
    assert again.status_code == 503
    assert [(i["rule"], i["subject"]) for i in again.get_json()["issues"]] == [("no_worker", "low")]


def test_alerts_lists_what_the_rules_fired(api: Api, conn: redis.Redis, env: dict[str, str]) -> None:
    assert api.get("/alerts", "read").get_json()["alerts"] == []
    now = time.time()
    fake_run(conn, FakeRun("t_bad", "full", now - 200, now - 190, now - 5, FAILED, hospitals=0))
    settings = Settings.from_env({**env, "REFRESHQ_ALERT_FOR": "0"})
    alert_state.evaluate(conn, settings, now=now)
    listed = api.get("/alerts").get_json()
    fired = {(a["rule"], a["state"]) for a in listed["alerts"]}
    assert ("refresh_failed", "firing") in fired and listed["firing"] >= 1
    assert listed["evaluated_at"] is not None


def test_the_health_page_shows_issues_and_alerts_escaped(api: Api, conn: redis.Redis, env: dict[str, str]) -> None:
    now = time.time()
    fake_run(conn, FakeRun("t_<b>x</b>", "full", now - 200, now - 190, now - 5, FAILED, hospitals=0))
    alert_state.evaluate(conn, Settings.from_env({**env, "REFRESHQ_ALERT_FOR": "0"}), now=now)
    token = api.tokens["read"]
    page = api.client.get("/health", headers={"Authorization": f"Bearer {token}"})
    assert page.status_code == 200
    html = page.data.decode()
    assert 'id="health-status" class="status-critical">critical<' in html and "no_scheduler" in html
    assert "refresh_failed" in html and "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html
    assert api.client.get("/health").status_code in (302, 401)  # signed out: the sign-in page
