"""rq-dashboard 0.9 mounted under /rq, made fit to embed.

Embedded as it ships, it answers 500 for an unknown job, queue, registry, instance or page, loads
and saves jobs with pickle in several routes, renders stored text as HTML, and changes state on a
GET. Here: every route's arguments are checked first (404 for what does not exist, 400 for a page
that cannot be), the routes that load or change jobs are refreshq's own JSON handlers
(web.dashboard_views), its templates are patched to escape (web.templates), and its state-changing
routes are POST-only and same-origin (web.security).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from math import ceil
from typing import Any

import redis
from flask import Flask, abort, current_app, redirect, request, url_for
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.utils import as_text
from rq_dashboard.web import blueprint, setup_rq_connection
from rq_dashboard.web import config as dashboard_config
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse

from jobs import queues
from web import dashboard_views, security
from web.templates import DashboardTemplates

BLUEPRINT = blueprint.name
URL_PREFIX = "/rq"
MAX_PER_PAGE = 500
ORDERS = ("asc", "dsc")
# The routes that change state: POST only, same-origin, behind the password like everything else.
MUTATING = frozenset(
    f"{BLUEPRINT}.{name}"
    for name in ("delete_job_view", "requeue_job_view", "requeue_all", "empty_queue", "compact_queue")
)
_JSON = MUTATING | {f"{BLUEPRINT}.{n}" for n in ("list_queues", "list_jobs", "job_info", "list_workers")}


def mount(app: Flask, redis_url: str) -> None:
    app.config["RQ_DASHBOARD_REDIS_URL"] = redis_url
    dashboard_config.serializer = JSONSerializer  # the routes left to rq-dashboard read with it
    templates = DashboardTemplates()
    app.jinja_loader = templates  # the app's loader is consulted before the blueprint's
    templates.check(app.jinja_env)
    setup_rq_connection(app)
    app.register_blueprint(blueprint, url_prefix=URL_PREFIX)
    for name, handler in dashboard_views.REPLACEMENTS.items():
        _replace(app, name, _instead(handler))
    _replace(app, "job_info", lambda original: lambda **kw: _job_info(original, **kw))
    _replace(app, "jobs_overview", lambda original: lambda **kw: _jobs_overview(original, **kw))
    security.install(app, MUTATING)
    app.before_request(check_arguments)
    app.register_error_handler(HTTPException, _error)


def _replace(app: Flask, name: str, make: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    """Route rq-dashboard's endpoint `name` to `make(its original view)`."""
    endpoint = f"{BLUEPRINT}.{name}"
    if endpoint not in app.view_functions:  # another rq-dashboard version: its view would stay in place
        raise RuntimeError(f"rq-dashboard has no endpoint {endpoint} for refreshq to replace")
    app.view_functions[endpoint] = make(app.view_functions[endpoint])


def _instead(handler: Callable[..., Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def make(_original: Callable[..., Any]) -> Callable[..., Any]:
        return handler

    return make


def _job_info(original: Callable[..., Any], **kw: Any) -> Any:
    try:
        return original(**kw)
    except NoSuchJobError:  # it expired or was deleted after the arguments were checked
        abort(404, f"no job {kw['job_id']}")


def _jobs_overview(original: Callable[..., Any], **kw: Any) -> Any:
    if kw["queue_name"] is None:  # /view/jobs shows RQ's "default" queue, which refreshq does not use
        return redirect(url_for(
            f"{BLUEPRINT}.jobs_overview", instance_number=kw["instance_number"], queue_name=queues.REFRESH,
            registry_name="queued", per_page=8, order="asc", page=1,
        ))
    return original(**kw)


def _conn() -> redis.Redis:
    return current_app.redis_conn  # type: ignore[attr-defined,no-any-return]


def known_queues(conn: redis.Redis) -> set[str]:
    """refreshq's queues and any other RQ queue on this server."""
    registered = {as_text(k).removeprefix(Queue.redis_queue_namespace_prefix)
                  for k in conn.smembers(Queue.redis_queues_keys)}
    return set(queues.ALL_QUEUES) | registered


def check_arguments() -> None:
    """404 for a job, queue, registry or instance that does not exist; 400/404 for a bad page."""
    args = request.view_args
    if request.blueprint != BLUEPRINT or not args:
        return
    if args.get("instance_number", 0) != 0:
        abort(404, "there is one Redis instance: 0")
    queue_name, registry_name = args.get("queue_name"), args.get("registry_name")
    if queue_name is not None and queue_name not in known_queues(_conn()):
        abort(404, f"no queue {queue_name}")
    if registry_name is not None and registry_name not in dashboard_views.REGISTRIES:
        abort(404, f"no registry {registry_name}: one of {', '.join(dashboard_views.REGISTRIES)}")
    if queue_name is not None and "page" in args:
        _check_page(queue_name, registry_name or "queued", args)
    job_id = args.get("job_id")
    if job_id is not None and not Job.exists(job_id, connection=_conn()):
        abort(404, f"no job {job_id}")


def _check_page(queue_name: str, registry_name: str, args: dict[str, Any]) -> None:
    try:
        per_page, page = int(args["per_page"]), int(args["page"])
    except ValueError:
        abort(400, "page and per_page must be whole numbers")
    if not 1 <= per_page <= MAX_PER_PAGE:
        abort(400, f"per_page must be 1 to {MAX_PER_PAGE}")
    if page < 1:
        abort(400, "pages are numbered from 1")
    if args["order"] not in ORDERS:
        abort(400, "order must be asc or dsc")
    last = max(1, ceil(dashboard_views.count(queue_name, registry_name) / per_page))
    if page > last:
        abort(404, f"no page {page}: the last is {last}")


def _error(error: HTTPException) -> BaseResponse:
    """Errors as JSON for the dashboard's API and actions, as plain text (never HTML) elsewhere."""
    response = error.get_response()
    if request.endpoint in _JSON:
        response.set_data(json.dumps({"status": "ERROR", "error": error.description}) + "\n")
        response.mimetype = "application/json"
    else:
        response.set_data(f"{error.code} {error.name}: {error.description}\n")
        response.mimetype = "text/plain"
    return response
