"""The Flask app: rq-dashboard under /rq (web.dashboard) behind an optional password, plus a health check."""

from __future__ import annotations

import hmac
import ipaddress

import redis
from flask import Flask, Response, redirect, request
from werkzeug.wrappers import Response as BaseResponse

from jobs.config import Settings
from jobs.errors import ConfigError
from jobs.queues import register_queues
from web import dashboard, metrics

_PUBLIC_PATHS = ("/healthz",)
# Paths that check credentials themselves (/metrics also takes a scrape token).
_OWN_AUTH_PATHS = (metrics.PATH,)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(settings: Settings, host: str) -> None:
    """Refuse to serve the dashboard (which can delete jobs) beyond this machine without a password."""
    if not is_loopback(host) and not settings.web_password:
        raise ConfigError(
            f"refusing to listen on {host} without a password: set REFRESHQ_WEB_PASSWORD "
            "(or bind 127.0.0.1)"
        )


def create_app(settings: Settings, redis_url: str) -> Flask:
    app = Flask("refreshq")
    app.extensions["refreshq.settings"] = settings

    # First of the request hooks: rq-dashboard has no auth of its own, and nothing but the health
    # check (static files and the read-only views included) answers without the password.
    @app.before_request
    def require_password() -> BaseResponse | None:
        if settings.web_password is None or request.path in _PUBLIC_PATHS + _OWN_AUTH_PATHS:
            return None
        auth = request.authorization
        given = (auth.password or "") if auth else ""
        if hmac.compare_digest(given.encode(), settings.web_password.encode()):
            return None
        return Response(
            "authentication required\n", 401, {"WWW-Authenticate": 'Basic realm="refreshq"'}
        )

    dashboard.mount(app, redis_url)
    register_queues(app.redis_conn)  # type: ignore[attr-defined]
    metrics.mount(app, settings)

    @app.get("/")
    def index() -> BaseResponse:
        return redirect("/rq/")

    @app.get("/healthz")
    def healthz() -> tuple[dict[str, str], int]:
        try:
            app.redis_conn.ping()  # type: ignore[attr-defined]
        except redis.RedisError as exc:
            return {"status": "error", "redis": type(exc).__name__}, 503
        return {"status": "ok", "redis": "ok"}, 200

    return app
