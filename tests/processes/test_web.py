from __future__ import annotations

import base64
import signal
import subprocess

import pytest

from jobs.config import Settings
from jobs.errors import ConfigError
from tests.support.helpers import REFRESHQ, free_port, get_when_up, run_cli
from web.app import check_exposure, create_app


def test_dashboard_answers_under_rq(settings: Settings, redis_url: str) -> None:
    client = create_app(settings, redis_url).test_client()
    page = client.get("/rq/")
    assert page.status_code == 200
    assert b"<title>RQ dashboard</title>" in page.data
    queues = client.get("/rq/0/data/queues.json")
    assert queues.status_code == 200
    names = {q["name"] for q in queues.get_json()["queues"]}
    assert {"refresh", "critical", "high", "normal", "low"} <= names
    home = client.get("/")  # refreshq's own pages, with a link to rq-dashboard
    assert home.status_code == 200 and b'href="/rq/"' in home.data


def test_password_protects_everything_but_the_health_check(env: dict[str, str], redis_url: str) -> None:
    settings = Settings.from_env({**env, "REFRESHQ_WEB_PASSWORD": "pw"})
    client = create_app(settings, redis_url).test_client()
    assert client.get("/rq/").status_code == 401
    bad = base64.b64encode(b"admin:wrong").decode()
    assert client.get("/rq/", headers={"Authorization": f"Basic {bad}"}).status_code == 401
    good = base64.b64encode(b"admin:pw").decode()
    assert client.get("/rq/", headers={"Authorization": f"Basic {good}"}).status_code == 200
    assert client.get("/healthz").status_code == 200


def test_listening_beyond_loopback_needs_a_password(settings: Settings) -> None:
    check_exposure(settings, "127.0.0.1")
    check_exposure(settings, "::1")
    with pytest.raises(ConfigError, match="REFRESHQ_WEB_PASSWORD"):
        check_exposure(settings, "0.0.0.0")


def test_cli_web_serves_the_dashboard_and_stops_on_sigterm(env: dict[str, str]) -> None:
    port = free_port()
    proc = subprocess.Popen([REFRESHQ, "web", "--port", str(port)], env=env, stderr=subprocess.PIPE)
    try:
        response = get_when_up(f"http://127.0.0.1:{port}/rq/")
        assert response.status_code == 200
        assert "<title>RQ dashboard</title>" in response.text
    finally:
        proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0


def test_cli_web_honours_port_from_the_environment(env: dict[str, str]) -> None:
    port = free_port()
    proc = subprocess.Popen([REFRESHQ, "web"], env={**env, "PORT": str(port)}, stderr=subprocess.PIPE)
    try:
        assert get_when_up(f"http://127.0.0.1:{port}/healthz").json()["status"] == "ok"
    finally:
        proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0


def test_cli_web_refuses_a_public_address_without_password(env: dict[str, str]) -> None:
    result = run_cli("web", "--host", "0.0.0.0", "--port", str(free_port()), env=env)
    assert result.returncode == 2
    assert "REFRESHQ_WEB_PASSWORD" in result.stderr

