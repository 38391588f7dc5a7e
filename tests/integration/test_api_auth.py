"""Who may call what: 401 with WWW-Authenticate on every route without a good token, 403 for a role
that may not, the password and the sign-in session, cross-site refusals, and tokens stored as hashes."""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

import pytest
import redis
from flask import Flask

from jobs import keys, tokens
from tests.support.api_helpers import PASSWORD, Api, is_problem, make_api
from tests.support.helpers import redis_keys_holding, run_cli
from web import access

# Every route of the API: (method, rule, the least role that may).
ROUTES = [
    ("POST", "/refreshes", "operate"), ("GET", "/refreshes", "read"), ("GET", "/refreshes/<task_id>", "read"),
    ("GET", "/refreshes/<task_id>/provinces", "read"), ("GET", "/refreshes/<task_id>/live", "read"),
    ("GET", "/refreshes/<task_id>/events", "read"), ("POST", "/refreshes/<task_id>/cancel", "operate"),
    ("POST", "/refreshes/<task_id>/resume", "operate"), ("POST", "/refreshes/cleanup", "admin"),
    ("GET", "/data/stats", "read"), ("GET", "/data/provinces/<province>", "read"), ("GET", "/data/export", "read"),
    ("GET", "/tasks", "read"), ("GET", "/tasks/<name>", "read"), ("POST", "/tasks/<name>/run", "operate"),
    ("GET", "/tasks/<name>/history", "read"), ("GET", "/runs/<run_id>", "read"),
    ("GET", "/schedules", "read"), ("GET", "/schedules/<name>", "read"), ("PUT", "/schedules/<name>", "admin"),
    ("DELETE", "/schedules/<name>", "admin"), ("POST", "/schedules/<name>/pause", "admin"),
    ("POST", "/schedules/<name>/resume", "admin"), ("POST", "/schedules/<name>/run-now", "admin"),
    ("GET", "/dead-letters", "read"), ("GET", "/dead-letters/<job_id>", "read"),
    ("POST", "/dead-letters/<job_id>/retry", "admin"), ("DELETE", "/dead-letters", "admin"),
    # /failed: aliases of /dead-letters (web.api.blueprint.ALIASES)
    ("GET", "/failed", "read"), ("GET", "/failed/<job_id>", "read"), ("POST", "/failed/<job_id>/retry", "admin"),
    ("DELETE", "/failed", "admin"), ("GET", "/workers", "read"), ("GET", "/queues", "read"),
    ("GET", "/metrics", "read"), ("GET", "/health", "read"), ("GET", "/performance", "read"),
    ("GET", "/alerts", "read"), ("POST", "/workers/suspend", "admin"), ("POST", "/workers/resume", "admin"),
    ("POST", "/workers/drain", "admin"), ("POST", "/workers/stop", "admin"), ("POST", "/workers/scale", "admin"),
]
RANK = {"read": 0, "operate": 1, "admin": 2}
# rq-dashboard's actions (admin); its other routes need read.
DASHBOARD_ACTIONS = {
    ("POST", "/rq/job/<job_id>/delete"), ("POST", "/rq/job/<job_id>/requeue"),
    ("POST", "/rq/queue/<queue_name>/<registry_name>/empty"), ("POST", "/rq/queue/<queue_name>/compact"),
    ("GET", "/rq/requeue/<queue_name>"), ("POST", "/rq/requeue/<queue_name>"),  # the GET answers 405
}
# The pages, the sign-in, the health check and /metrics.
OTHER_ROUTES = {
    ("GET", "/"): "read", ("GET", "/refreshes/<task_id>"): "read", ("GET", "/tasks"): "read",
    ("GET", "/tasks/<name>"): "read", ("GET", "/schedules"): "read", ("GET", "/dead-letters"): "read",
    ("GET", "/failed"): "read",
    ("GET", "/workers"): "read", ("GET", "/health"): "read",
    ("GET", "/login"): "public", ("POST", "/login"): "public", ("POST", "/logout"): "public",
    ("GET", "/assets/<path:filename>"): "public", ("GET", "/static/<path:filename>"): "public",
    ("GET", "/healthz"): "public",
    ("GET", "/metrics"): "password or metrics token",
}


@pytest.fixture
def api(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, conn: redis.Redis, redis_url: str) -> Api:
    return make_api(env, monkeypatch, conn, redis_url)


def test_the_route_table_is_every_api_route_with_the_role_its_view_declares(api: Api) -> None:
    declared = {(r.method, r.rule): r.access for r in access.table(api.app) if r.rule.startswith("/api/v1/")}
    assert declared == {(m, "/api/v1" + rule): role for m, rule, role in ROUTES}


def test_every_route_outside_the_api_declares_who_may_call_it(api: Api) -> None:
    declared = {(r.method, r.rule): r.access for r in access.table(api.app) if not r.rule.startswith("/api/")}
    dashboard = {key: role for key, role in declared.items() if key[1].startswith("/rq/")}
    assert {key for key, role in dashboard.items() if role == "admin"} == DASHBOARD_ACTIONS
    assert {role for key, role in dashboard.items() if key not in DASHBOARD_ACTIONS} == {"read"}
    assert len(dashboard) > 15  # its pages, its JSON, its assets
    assert {key: role for key, role in declared.items() if key not in dashboard} == OTHER_ROUTES


def test_the_dashboard_asks_the_roles_the_table_says(api: Api) -> None:
    def call(method: str, path: str, role: str | None = None) -> Any:
        headers = {"Sec-Fetch-Site": "same-origin"}  # its own pages: only the role decides
        if role is not None:
            headers["Authorization"] = f"Bearer {api.tokens[role]}"
        return api.client.open(path, method=method, headers=headers)

    for method, rule in sorted(DASHBOARD_ACTIONS):
        path = rule.replace("<job_id>", "x").replace("<queue_name>", "refresh").replace("<registry_name>", "failed")
        assert call(method, path).status_code == 401, (method, path)
        assert call(method, path, "operate").status_code == 403, (method, path)
        assert call(method, path, "admin").status_code in (200, 404, 405), (method, path)  # never a 500
    for path in ("/rq/", "/rq/0/view/workers", "/rq/0/data/queues.json", "/rq/0/data/workers.json"):
        assert call("GET", path).status_code == 401
        assert call("GET", path, "read").status_code == 200, path


def test_a_route_without_an_access_rule_stops_the_app(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    from jobs.config import Settings
    from web import prometheus
    from web.app import create_app

    def mount_unguarded(app: Flask, _settings: Settings) -> None:
        app.add_url_rule("/metrics", view_func=lambda: "every figure, to anyone", endpoint="metrics")

    monkeypatch.setattr(prometheus, "mount", mount_unguarded)
    with pytest.raises(RuntimeError, match=r"routes without an access rule.*GET /metrics \(metrics\)"):
        create_app(Settings.from_env(env), redis_url)


@pytest.mark.parametrize(("method", "path", "least"), ROUTES)
def test_every_route_needs_a_token_and_its_role(api: Api, method: str, path: str, least: str) -> None:
    path = re.sub(r"<(\w+)>", lambda m: "t-add" if m.group(1) == "name" else "x", path)
    for token in (None, "rfq_not-a-token", "garbage"):
        refused = api.call(method, path, token)
        assert is_problem(refused, 401)["title"] == "Unauthorized"
        assert refused.headers["WWW-Authenticate"] == 'Bearer realm="refreshq"'
    for role in ("read", "operate"):
        answer = api.call(method, path, role, json={})
        if RANK[role] < RANK[least]:
            assert is_problem(answer, 403)["detail"] == "this token's role may not do this"
            assert "WWW-Authenticate" not in answer.headers
        else:
            assert answer.status_code not in (401, 403), (role, answer.data)


def test_a_token_in_the_query_string_is_not_a_token(api: Api) -> None:
    is_problem(api.get(f"/refreshes?token={api.tokens['admin']}&access_token={api.tokens['admin']}", None), 401)


def test_the_password_is_admin_over_basic(api: Api) -> None:
    good = base64.b64encode(f"anyone:{PASSWORD}".encode()).decode()
    bad = base64.b64encode(b"anyone:nope").decode()
    assert api.get("/queues", None, headers={"Authorization": f"Basic {good}"}).status_code == 200
    is_problem(api.get("/queues", None, headers={"Authorization": f"Basic {bad}"}), 401)
    # A browser sends Basic credentials with forged cross-site requests too: a mutation needs same-origin.
    forged = api.post("/refreshes", None, json={"kind": "full"}, headers={"Authorization": f"Basic {good}"})
    assert "does not come from this site" in is_problem(forged, 403)["detail"]
    own = api.post("/refreshes", None, json={"kind": "full"}, headers={
        "Authorization": f"Basic {good}", "Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"})
    assert own.status_code == 201 and own.get_json()["owner"] == "admin"


def test_a_revoked_token_is_401_at_once(api: Api) -> None:
    assert api.get("/queues", "read").status_code == 200
    info = tokens.verify(api.conn, api.tokens["read"])
    assert info is not None
    tokens.revoke(api.conn, info.id)
    is_problem(api.get("/queues", "read"), 401)


def test_signing_in_sets_a_strict_http_only_session(api: Api) -> None:
    client = api.client
    page = client.get("/")
    assert page.status_code == 302 and page.headers["Location"].startswith("/login?next=/")
    origin = {"Origin": "http://localhost"}
    wrong = client.post("/login", data={"password": "nope", "next": "/"}, headers=origin)
    assert wrong.status_code == 401 and b"wrong password or token" in wrong.data
    cross = client.post("/login", data={"password": PASSWORD}, headers={"Origin": "http://evil.example"})
    assert cross.status_code == 403
    signed = client.post("/login", data={"token": api.tokens["operate"], "next": "//evil.example/x"}, headers=origin)
    assert signed.status_code == 303 and signed.headers["Location"] == "/"  # never off this site
    cookie = signed.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert api.tokens["operate"] not in cookie and api.tokens["operate"][4:12] not in cookie
    assert client.get("/").status_code == 200
    assert client.get("/api/v1/queues").status_code == 200  # the pages' calls ride on the session
    forged = client.post("/api/v1/refreshes", json={"kind": "full"})  # no Origin: not from this site's pages
    is_problem(forged, 403)
    created = client.post("/api/v1/refreshes", json={"kind": "full"}, headers={"Sec-Fetch-Site": "same-origin"})
    assert created.status_code == 201 and created.get_json()["owner"] == "operate-user"
    is_problem(client.post("/api/v1/refreshes/cleanup", json={}, headers={"Sec-Fetch-Site": "same-origin"}), 403)
    # Revoking the token ends the session too.
    info = tokens.verify(api.conn, api.tokens["operate"])
    assert info is not None
    tokens.revoke(api.conn, info.id)
    assert client.get("/").status_code == 302
    assert client.post("/logout", headers=origin).status_code == 303


def test_without_a_password_loopback_callers_are_the_local_admin(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, conn: redis.Redis, redis_url: str
) -> None:
    from jobs.config import Settings
    from web.app import create_app

    client = create_app(Settings.from_env(env), redis_url).test_client()
    assert client.get("/api/v1/queues").status_code == 200
    created = client.post("/api/v1/refreshes", json={"kind": "full"}, headers={"Sec-Fetch-Site": "same-origin"})
    assert created.status_code == 201 and created.get_json()["owner"] == "local"
    is_problem(client.post("/api/v1/refreshes", json={"kind": "full"}, headers={"Sec-Fetch-Site": "cross-site"}), 403)
    is_problem(client.get("/api/v1/queues", headers={"Authorization": "Bearer rfq_wrong"}), 401)


def test_tokens_cli_prints_the_token_once_and_stores_only_its_hash(env: dict[str, str], conn: redis.Redis) -> None:
    made = run_cli("tokens", "create", "--user", 'O\'Brien "ops" 🚀', "--role", "operate", "--max-running", "2",
                   env=env)
    assert made.returncode == 0, made.stderr
    token = made.stdout.rstrip("\n").splitlines()[-1]
    assert token.startswith("rfq_") and " " not in token and made.stdout.count(token) == 1
    assert token not in made.stderr
    info = tokens.verify(conn, token)
    assert info is not None and info.user == 'O\'Brien "ops" 🚀' and info.max_running == 2 and info.max_pending is None
    assert redis_keys_holding(conn, token) == [] and redis_keys_holding(conn, token[4:20]) == []
    assert conn.hexists(keys.TOKENS, hashlib.sha256(token.encode()).hexdigest())
    listed = run_cli("tokens", "list", env=env)
    assert info.id in listed.stdout and token not in listed.stdout and "O'Brien" in listed.stdout
    as_json = run_cli("tokens", "list", "--json", env=env)
    assert token not in as_json.stdout and '"max_running": 2' in as_json.stdout
    assert run_cli("tokens", "revoke", info.id, env=env).returncode == 0
    assert tokens.verify(conn, token) is None
    again = run_cli("tokens", "revoke", info.id, env=env)
    assert again.returncode == 2 and "no token" in again.stderr


@pytest.mark.parametrize(("args", "says"), [
    (["--user", "a\nb", "--role", "read"], "control character"),
    (["--user", " ", "--role", "read"], "user name is required"),
    (["--user", "a", "--role", "root"], "'root' is not one of"),
    (["--user", "a", "--role", "read", "--max-pending", "-1"], "-1"),
])
def test_tokens_create_refuses_bad_input(env: dict[str, str], conn: redis.Redis, args: list[str], says: str) -> None:
    done = run_cli("tokens", "create", *args, env=env)
    assert done.returncode == 2 and says in done.stderr, done.stderr
    assert conn.hlen(keys.TOKENS) == 0
