"""Helpers of the API tests: an app with a password and a token per role, and requests that carry them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from jobs import tokens
from jobs.config import Settings
from tests.support.named_helpers import named_env
from web.app import create_app

PASSWORD = "pw"
SCALE = 300  # hospitals in the sample directory a test refreshes


@dataclass
class Api:
    """The app's test client plus one token per role (and one limited operator)."""

    app: Flask
    client: FlaskClient
    tokens: dict[str, str]
    conn: redis.Redis

    def call(self, method: str, path: str, token: str | None = "admin", **kwargs: Any) -> Any:
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {self.tokens.get(token, token)}"
        return self.client.open(f"/api/v1{path}", method=method, headers=headers, **kwargs)

    def get(self, path: str, token: str | None = "admin", **kwargs: Any) -> Any:
        return self.call("GET", path, token, **kwargs)

    def post(self, path: str, token: str | None = "admin", **kwargs: Any) -> Any:
        return self.call("POST", path, token, **kwargs)


def make_api(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, conn: redis.Redis, redis_url: str,
             **extra: str) -> Api:
    environment = {**named_env(env, monkeypatch), "REFRESHQ_WEB_PASSWORD": PASSWORD,
                   "REFRESHQ_SAMPLE_SCALE": str(SCALE), **extra}
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    app = create_app(Settings.from_env(environment), redis_url)
    made = {role: tokens.create(conn, f"{role}-user", role)[0] for role in tokens.ROLES}
    made["other"] = tokens.create(conn, "other-user", "operate")[0]
    made["limited"] = tokens.create(conn, "limited-user", "operate", max_running=1, max_pending=1)[0]
    return Api(app, app.test_client(), made, conn)


def is_problem(response: Any, status: int) -> dict[str, Any]:
    """The response is an RFC 9457 problem with this status; its body."""
    assert response.status_code == status, (response.status_code, response.data[:500])
    assert response.mimetype == "application/problem+json", response.mimetype
    body: dict[str, Any] = response.get_json(force=True)
    assert body["status"] == status and body["title"] and body["type"] and isinstance(body["detail"], str)
    return body
