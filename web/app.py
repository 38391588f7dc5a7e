"""The Flask app: rq-dashboard under /rq behind an optional password, plus a health check."""

from __future__ import annotations

import hmac
import ipaddress

import redis
from flask import Flask, Response, redirect, request
from rq.serializers import JSONSerializer
from rq_dashboard import default_settings
from rq_dashboard.web import blueprint as dashboard_blueprint
from rq_dashboard.web import config as dashboard_config
from rq_dashboard.web import setup_rq_connection
from werkzeug.wrappers import Response as BaseResponse

from jobs.config import Settings
from jobs.errors import ConfigError
from jobs.queues import register_queues

_PUBLIC_PATHS = ("/healthz",)


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
    app.config.from_object(default_settings)
    app.config["RQ_DASHBOARD_REDIS_URL"] = redis_url
    # rq-dashboard embedded has no auth of its own and reads jobs with pickle unless told otherwise.
    dashboard_config.serializer = JSONSerializer
    setup_rq_connection(app)
    register_queues(app.redis_conn)  # type: ignore[attr-defined]
    app.register_blueprint(dashboard_blueprint, url_prefix="/rq")
    app.extensions["refreshq.settings"] = settings

    @app.before_request
    def require_password() -> BaseResponse | None:
        if settings.web_password is None or request.path in _PUBLIC_PATHS:
            return None
        auth = request.authorization
        given = (auth.password or "") if auth else ""
        if hmac.compare_digest(given.encode(), settings.web_password.encode()):
            return None
        return Response(
            "authentication required\n", 401, {"WWW-Authenticate": 'Basic realm="refreshq"'}
        )

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
