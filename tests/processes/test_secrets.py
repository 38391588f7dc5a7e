"""Credentials inside URLs: a refresh authenticates with them, and they appear nowhere else — not in
Redis (every key and value scanned), not in the worker's log, not in any command's output."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis

from jobs import keys
from jobs.config import Settings, UpstreamSettings
from jobs.errors import ValidationError
from jobs.redact import Redactor, mask_url, mask_urls, split_credentials
from jobs.refresh.manager import SyncTaskManager
from jobs.upstream import build_upstream, spec_from_settings
from jobs.upstream.http import HttpDirectoryClient
from jobs.upstream.llm import LLMClient
from jobs.upstream.sample import SampleDirectory
from tests.support.auth_upstream import start_basic_auth
from tests.support.helpers import (
    checksum,
    exported,
    http_server,
    province_hospitals,
    redis_keys_holding,
    run_cli,
    wait_until,
    with_credentials,
    worker_process,
)

SCALE = 3000
USER = "refresher"
# With '@', '/' and ':' it must be percent-encoded in the URL: both spellings are searched for.
PASSWORD = "s3cr3t-p@ss/w:rd-91f"
SPELLINGS = (PASSWORD, quote(PASSWORD, safe=""), "s3cr3t")


def leaks(text: str) -> list[str]:
    return [s for s in SPELLINGS if s in text]


@pytest.mark.slow
def test_a_refresh_authenticates_with_url_credentials_that_leak_nowhere(
    env: dict[str, str], conn: redis.Redis, tmp_path: Path
) -> None:
    outputs: list[str] = []
    log = tmp_path / "worker.log"
    with start_basic_auth(SCALE, USER, PASSWORD) as upstream:
        cli_env = {**env, "REFRESHQ_UPSTREAM_URL": upstream.url_with(USER, PASSWORD)}
        with worker_process(cli_env, log=log):
            done = run_cli("refresh", "province", "北京", "--wait", "--json", env=cli_env, timeout=120)
            outputs += [done.stdout, done.stderr]
            assert done.returncode == 0, done.stderr
            status = json.loads(done.stdout)
            assert status["status"] == "SUCCEEDED"
        # A worker with a wrong password (one that holds the right one, so a leak of either is caught) fails
        # the task, and says why without repeating it.
        wrong_env = {**env, "REFRESHQ_UPSTREAM_URL": upstream.url_with(USER, PASSWORD + "-wrong")}
        with worker_process(wrong_env, log=log):
            refused = run_cli("refresh", "province", "天津", "--wait", "--json", env=wrong_env, timeout=120)
        outputs += [refused.stdout, refused.stderr]
        assert refused.returncode == 1, refused.stderr
        failed = json.loads(refused.stdout)
        assert failed["status"] == "FAILED" and "401" in json.dumps(failed, ensure_ascii=False)
        assert upstream.server.refused > 0
        for args in (("status", status["task_id"], "--json"), ("list", "--json"), ("info",),
                     ("data", "show", "北京", "--limit", "3"), ("tasks", "list"), ("status", status["task_id"]),
                     ("list",)):
            result = run_cli(*args, env=cli_env)
            assert result.returncode == 0, (args, result.stderr)
            assert args[0] not in ("status", "list") or upstream.url in result.stdout  # the task's upstream
            outputs += [result.stdout, result.stderr]
        assert upstream.server.accepted > 0 and not any(leaks(line) for line in upstream.server.request_lines)

    assert checksum(exported(conn, "110000")) == checksum(province_hospitals(SampleDirectory(SCALE), "11"))
    stored = json.loads(conn.hget(keys.task(status["task_id"]), "upstream") or b"{}")
    assert stored == {"kind": "http", "url": upstream.url}  # no userinfo: re-attached by the worker
    assert status["upstream"] == stored  # and shown so, in the status dict
    assert conn.zcard(keys.UPSTREAM_WORKERS) == 1  # the workers' advertisement of their upstream: scanned too
    for spelling in SPELLINGS:
        assert redis_keys_holding(conn, spelling) == [], spelling
    worker_log = log.read_text(encoding="utf-8")
    assert "refresh_province" in worker_log or "refresh task_" in worker_log  # the log is the worker's, not empty
    assert leaks(worker_log) == []
    assert "HTTP Request:" not in worker_log  # httpx's per-request INFO lines are off
    assert [leaks(text) for text in outputs if leaks(text)] == []


def test_clients_keep_url_credentials_out_of_their_url_repr_and_errors() -> None:
    url = f"http://{USER}:{quote(PASSWORD, safe='')}@127.0.0.1:9/v1"
    with HttpDirectoryClient(url, max_attempts=1) as client:
        assert client.base_url == "http://127.0.0.1:9/v1"
        assert leaks(repr(client)) == []
        redacted = client._redact(f"GET {url}/regions failed: {PASSWORD}")
        assert redacted == "GET http://refresher:***@127.0.0.1:9/v1/regions failed: ***"
    with LLMClient(url, api_key="sk-key-123", model="m") as llm:
        assert llm.base_url == "http://127.0.0.1:9/v1" and leaks(repr(llm)) == []


def test_the_llm_client_sends_url_credentials_as_basic_auth() -> None:
    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append({"auth": self.headers.get("Authorization", ""), "line": self.requestline})
            body = json.dumps({"choices": [{"message": {"content": "[]"}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with http_server(Handler) as server:
        base = f"http://{USER}:{quote(PASSWORD, safe='')}@127.0.0.1:{server.server_address[1]}/v1"
        settings = Settings(upstream=UpstreamSettings(llm_base_url=base, llm_model="m"))
        spec = spec_from_settings(settings)
        assert spec == {"kind": "llm", "base_url": f"http://127.0.0.1:{server.server_address[1]}/v1", "model": "m"}
        llm = build_upstream(spec, settings)
        try:
            assert list(llm.hospitals({"code": "110101", "name": "东城区", "level": "district"})) == []
        finally:
            llm.close()
    assert seen and seen[0]["auth"] == "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert seen[0]["line"].startswith("POST /v1/chat/completions ")


def test_a_spec_with_credentials_the_settings_do_not_hold_is_refused(settings: Settings, conn: redis.Redis) -> None:
    with pytest.raises(ValidationError, match="carries credentials") as err:
        url = f"http://u:{quote(PASSWORD, safe='')}@127.0.0.1:9/v1"
        SyncTaskManager(settings, conn, upstream={"kind": "http", "url": url})
    assert leaks(str(err.value)) == []
    # The same URL as the settings' is stored without its userinfo.
    configured = Settings(upstream=UpstreamSettings(url=f"http://u:{quote(PASSWORD, safe='')}@127.0.0.1:9/v1"))
    manager = SyncTaskManager(configured, conn, upstream={"kind": "http", "url": configured.upstream.url})
    assert manager.upstream == {"kind": "http", "url": "http://127.0.0.1:9/v1"}


def test_the_masking_rules() -> None:
    assert mask_url("redis://:pw-123@h:6379/0") == "redis://:***@h:6379/0"
    assert mask_url("redis://default:pw@h") == "redis://default:***@h"
    assert mask_url("https://ghp_token1234@example.com/v1") == "https://***@example.com/v1"
    assert mask_url("http://127.0.0.1:8700/v1?x=a@b") == "http://127.0.0.1:8700/v1?x=a@b"
    assert mask_urls("a http://u:p@h/x and unix://u:q@/tmp/s.sock") == "a http://u:***@h/x and unix://u:***@/tmp/s.sock"
    assert split_credentials("http://a%40b:c%2Fd@h:1/v1") == ("http://h:1/v1", ("a@b", "c/d"))
    assert split_credentials("http://h/v1") == ("http://h/v1", None)
    redact = Redactor("tok-123", None, "pw")  # too short to replace everywhere: masked inside URLs only
    assert redact("tok-123 at http://x:pw@h, pwd") == "*** at http://x:***@h, pwd"


@pytest.fixture
def password_url(redis_url: str, conn: redis.Redis) -> Iterator[str]:
    """REDIS_URL of the test server for a user with a password (an ACL user, removed afterwards)."""
    conn.execute_command("ACL", "SETUSER", "tester", "on", f">{PASSWORD}", "~*", "&*", "+@all")
    try:
        yield with_credentials(redis_url, "tester", PASSWORD)
    finally:
        conn.execute_command("ACL", "DELUSER", "tester")


@pytest.mark.slow
def test_commands_that_print_the_redis_url_mask_its_password(
    env: dict[str, str], conn: redis.Redis, password_url: str, tmp_path: Path
) -> None:
    cli_env = {**env, "REDIS_URL": password_url}
    scheme, rest = password_url.split("://")
    masked = f"{scheme}://tester:***@{rest.rpartition('@')[2]}"
    info = run_cli("info", env=cli_env)
    assert info.returncode == 0, info.stderr
    assert f"server: {masked} (REDIS_URL)" in info.stdout
    url = run_cli("server", "url", env=cli_env)
    assert (url.returncode, url.stdout.strip()) == (0, masked)
    revealed = run_cli("server", "url", "--reveal", env=cli_env)
    assert revealed.stdout.strip() == password_url  # asked for explicitly
    demo = run_cli("demo", "--scale", "0", "--workers", "1", env=cli_env, timeout=120)
    assert demo.returncode == 0, demo.stderr
    assert f"server: {masked}" in demo.stdout
    logs = list((Path(env["REFRESHQ_DATA_DIR"]) / "logs").glob("demo-worker-*.log"))
    assert logs and all("Listening on" in p.read_text() for p in logs)
    texts = [info.stdout, info.stderr, url.stdout, url.stderr, demo.stdout, demo.stderr,
             *(p.read_text() for p in logs)]
    assert [leaks(t) for t in texts if leaks(t)] == []
    wait_until(lambda: not conn.smembers("rq:workers"), 30, what="the demo worker to unregister")
    for spelling in SPELLINGS:
        assert redis_keys_holding(conn, spelling) == [], spelling
