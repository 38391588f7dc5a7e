"""rq-dashboard 0.9 mounted under /rq, made fit to embed: everything refreshq does to it is in this package.

Embedded as it ships, it has no authentication, answers 500 for an unknown job, queue, registry,
instance or page, loads and saves jobs with pickle in several routes, renders stored text as HTML, and
changes state on a GET. Here:
- guards: its pages need the read role and its actions admin; its actions are POST-only and same-origin;
  every route's arguments are checked first (404 for what does not exist, 400 for a page that cannot be);
  its errors are JSON or plain text, never HTML;
- views: refreshq's own JSON handlers in place of the routes that load or change jobs;
- templates: its templates patched as they load, so that stored text is escaped.
The routes it leaves in place read with RQ's JSON serializer (its configured one).
"""

from __future__ import annotations

from flask import Flask
from rq.serializers import JSONSerializer
from rq_dashboard.web import blueprint, setup_rq_connection
from rq_dashboard.web import config as dashboard_config

from web.dashboard import guards, views
from web.dashboard.templates import DashboardTemplates

URL_PREFIX = "/rq"


def mount(app: Flask, redis_url: str) -> None:
    """Register rq-dashboard on `app` under URL_PREFIX with refreshq's views, guards and templates; its
    connection becomes the app's (`app.redis_conn`)."""
    app.config["RQ_DASHBOARD_REDIS_URL"] = redis_url
    dashboard_config.serializer = JSONSerializer  # the routes left to rq-dashboard read with it
    templates = DashboardTemplates()
    app.jinja_loader = templates  # the app's loader is consulted before the blueprint's
    templates.check(app.jinja_env)
    setup_rq_connection(app)
    app.register_blueprint(blueprint, url_prefix=URL_PREFIX)
    views.install(app)
    guards.install(app)
