"""The Flask app: the API (web.api), the live pages (web.pages) and rq-dashboard under /rq (web.dashboard), behind
one authentication (web.auth), every route with its access rule (web.access)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import redis
from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from jobs.config import Settings
from jobs.errors import ConfigError
from jobs.queues import register_queues
from jobs.reconnect import writes_refused
from jobs.refresh.manager import SyncRefreshManager
from web import access, api, auth, dashboard, pages, prometheus, security
from web.streams import SharedReads, StreamSlots


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(settings: Settings, host: str) -> None:
    """Refuse to serve the dashboard (which can delete jobs) beyond this machine without a password."""
    if not is_loopback(host) and not settings.web.password:
        raise ConfigError(
            f"refusing to listen on {host} without a password: set REFRESHQ_WEB_PASSWORD "
            "(or bind 127.0.0.1)"
        )


def create_app(settings: Settings, redis_url: str) -> Flask:
    """The web process: the API (/api/v1), the live pages, rq-dashboard under /rq, a health check.

    Every route declares who may call it on its view (web.access): the app refuses to start otherwise."""
    # Its root is this package, not the working directory: the app's own /static (rq-dashboard's pages link
    # its favicon there) serves web/static, which does not exist, whatever directory the process runs in.
    app = Flask("refreshq", root_path=str(Path(__file__).parent))
    app.extensions["refreshq.settings"] = settings
    if settings.web.trust_proxy:
        # The client's address (sign-in throttling) and scheme (the session cookie's Secure flag) as the
        # proxies in front say; never believed from a client that is not one (REFRESHQ_WEB_TRUST_PROXY=0).
        hops = settings.web.trust_proxy
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
    dashboard.mount(app, redis_url)  # first: it makes app.redis_conn (its guards run before any other hook)
    security.install(app)
    conn: redis.Redis = app.redis_conn  # type: ignore[attr-defined]
    register_queues(conn)
    app.secret_key = auth.session_secret(conn)
    auth.install(app, auth.Auth(settings, conn))
    app.extensions["refreshq.manager"] = SyncRefreshManager(settings, conn)
    app.extensions["refreshq.streams"] = StreamSlots(settings.web.streams)
    app.extensions["refreshq.shared_reads"] = SharedReads()
    prometheus.mount(app, settings)  # checks its own credentials: the password or the scrape token
    api.install(app)
    pages.install(app)

    @app.get("/healthz")
    @auth.public
    def healthz() -> tuple[dict[str, str], int]:
        try:
            refused = writes_refused(conn)  # also answers whether the server answers at all
        except redis.RedisError as exc:
            return {"status": "error", "redis": type(exc).__name__}, 503
        if refused is not None:  # reads (the pages, the API's GETs) still work: this process is healthy
            return {"status": "ok", "redis": "ok", "writes": f"refused ({refused['reason']})"}, 200
        return {"status": "ok", "redis": "ok"}, 200

    access.check(app)
    return app
