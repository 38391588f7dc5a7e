"""Guessing is throttled (web/throttle.py): after 10 failed sign-ins in 5 minutes an address, and the user
whose password was tried, get 429 with Retry-After until the window passes, the right password included;
counted in Redis, so every web process refuses alike. The session cookie is Secure over HTTPS, also behind
a proxy that says so, but only one REFRESHQ_WEB_TRUST_PROXY trusts."""

from __future__ import annotations

import base64
import time

import httpx
import pytest
import redis

from jobs import keys, tokens
from jobs.config import Settings
from tests.support.helpers import wait_until
from tests.support.web_helpers import web_process
from web import throttle
from web.app import create_app

PASSWORD = "pw"


def _basic(password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"anyone:{password}".encode()).decode()}


def _client(url: str, address: str) -> httpx.Client:
    """A client whose connections come from `address` (any of 127.0.0.0/8 reaches loopback)."""
    return httpx.Client(base_url=f"{url}/api/v1", timeout=10, transport=httpx.HTTPTransport(local_address=address))


def _throttled(response: httpx.Response) -> int:
    assert response.status_code == 429, (response.status_code, response.text[:300])
    assert response.headers["Content-Type"].startswith("application/problem+json")
    wait = int(response.headers["Retry-After"])
    assert 0 < wait <= throttle.WINDOW_SECONDS
    return wait


@pytest.mark.slow
def test_the_eleventh_bad_password_is_429_from_this_address_and_any_other(
    env: dict[str, str], conn: redis.Redis
) -> None:
    token = {"Authorization": f"Bearer {tokens.create(conn, 'reader', 'read')[0]}"}
    with web_process(env, PASSWORD) as url, _client(url, "127.0.0.1") as one, _client(url, "127.0.0.2") as other:
        assert [one.get("/queues", headers=_basic("nope")).status_code for _ in range(10)] == [401] * 10
        _throttled(one.get("/queues", headers=_basic("nope")))
        _throttled(one.get("/queues", headers=_basic(PASSWORD)))  # the right password too, until the window passes
        _throttled(other.get("/queues", headers=_basic(PASSWORD)))  # the same user from another address
        _throttled(one.get("/queues", headers=token))  # anything from the guessing address
        assert other.get("/queues", headers=token).status_code == 200  # another user from another address
        assert one.get(f"{url}/healthz").status_code == 200
        # /metrics takes the password too: it is throttled the same way.
        metrics = other.get(f"{url}/metrics", headers=_basic(PASSWORD))
        assert metrics.status_code == 429 and int(metrics.headers["Retry-After"]) > 0


@pytest.mark.slow
def test_bad_tokens_are_throttled_per_address_and_the_sign_in_form_too(env: dict[str, str], conn: redis.Redis) -> None:
    token = {"Authorization": f"Bearer {tokens.create(conn, 'reader', 'read')[0]}"}
    with web_process(env, PASSWORD) as url, _client(url, "127.0.0.3") as one, _client(url, "127.0.0.4") as other:
        bad = {"Authorization": "Bearer rfq_guess"}
        assert [one.get("/queues", headers=bad).status_code for _ in range(10)] == [401] * 10
        _throttled(one.get("/queues", headers=token))
        # A bad token names no user: another address, the password included, is not held up.
        assert other.get("/queues", headers=token).status_code == 200
        assert other.get("/queues", headers=_basic(PASSWORD)).status_code == 200
        form = {"Origin": url}
        wrong = [other.post(f"{url}/login", data={"password": "nope"}, headers=form).status_code for _ in range(10)]
        assert wrong == [401] * 10
        refused = other.post(f"{url}/login", data={"password": PASSWORD}, headers=form)
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
        assert "too many failed sign-ins" in refused.text and "text/html" in refused.headers["Content-Type"]


def test_counts_are_shared_by_every_web_process_and_end_with_the_window(
    env: dict[str, str], conn: redis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(throttle, "WINDOW_SECONDS", 2)
    settings = Settings.from_env({**env, "REFRESHQ_WEB_PASSWORD": PASSWORD})
    first, second = create_app(settings, redis_url).test_client(), create_app(settings, redis_url).test_client()
    for _ in range(9):
        assert first.get("/api/v1/queues", headers=_basic("nope")).status_code == 401
    # Successful sign-ins do not count, and do not wipe the failures either.
    for _ in range(5):
        assert second.get("/api/v1/queues", headers=_basic(PASSWORD)).status_code == 200
    assert second.get("/api/v1/queues", headers=_basic("nope")).status_code == 401  # the tenth
    refused = first.get("/api/v1/queues", headers=_basic(PASSWORD))
    assert refused.status_code == 429 and refused.mimetype == "application/problem+json"
    assert second.get("/api/v1/queues", headers=_basic(PASSWORD)).status_code == 429
    assert conn.get(keys.signin_failures("user", "admin")) == b"10"
    started = time.monotonic()
    wait_until(lambda: second.get("/api/v1/queues", headers=_basic(PASSWORD)).status_code == 200, 10, 0.1,
               "the window to pass")
    assert time.monotonic() - started < 5


def _session_cookie(url: str, **headers: str) -> str:
    signed = httpx.post(f"{url}/login", data={"password": PASSWORD}, headers={"Origin": url, **headers}, timeout=10)
    assert signed.status_code == 303, signed.text[:300]
    return signed.headers["Set-Cookie"]


@pytest.mark.slow
def test_the_session_cookie_is_secure_behind_a_trusted_proxy_only(env: dict[str, str], conn: redis.Redis) -> None:
    https = {"X-Forwarded-Proto": "https"}
    with web_process(env, PASSWORD, REFRESHQ_WEB_TRUST_PROXY="1") as url:
        assert "Secure" in _session_cookie(url, **https)
        assert "Secure" not in _session_cookie(url)
        # The proxy's X-Forwarded-For is the address counted: one guessing client, not the proxy, is held up.
        guesser = {"X-Forwarded-For": "203.0.113.7", "Authorization": "Bearer rfq_guess"}
        assert [httpx.get(f"{url}/api/v1/queues", headers=guesser).status_code for _ in range(10)] == [401] * 10
        _throttled(httpx.get(f"{url}/api/v1/queues", headers=guesser))
        assert httpx.get(f"{url}/api/v1/queues", headers={"X-Forwarded-For": "203.0.113.8", **_basic(PASSWORD)}
                         ).status_code == 200
    with web_process(env, PASSWORD) as url:  # nobody trusted: the header is a client's claim, ignored
        assert "Secure" not in _session_cookie(url, **https)
