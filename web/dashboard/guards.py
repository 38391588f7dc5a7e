"""What stands in front of rq-dashboard's routes, in the order it runs: who may (rq-dashboard has no auth of
its own: its pages need the read role, its actions admin), actions POST-only and from its own pages, every
route's arguments checked (404 for a job, queue, registry, instance or page that does not exist, 400 for a
page that cannot be), and errors as JSON for its API and actions, as plain text elsewhere.

Its actions change state, and a browser sends HTTP Basic credentials and cookies with any request to this
host, a forged cross-site form included: so they answer POST only (rq-dashboard also takes a GET for
requeue-all), and only from this site's pages (web.security.is_same_origin).
"""

from __future__ import annotations

import json
from math import ceil
from typing import Any

import redis
from flask import Flask, Response, abort, current_app, request
from rq import Queue
from rq.job import Job
from rq.utils import as_text
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse

from jobs import queues
from web import auth, security
from web.dashboard import views
from web.dashboard.views import BLUEPRINT

MAX_PER_PAGE = 500
ORDERS = ("asc", "dsc")
# The routes that change state: admin, POST only, same-origin.
MUTATING = frozenset(
    f"{BLUEPRINT}.{name}"
    for name in ("delete_job_view", "requeue_job_view", "requeue_all", "empty_queue", "compact_queue")
)
_JSON = MUTATING | {f"{BLUEPRINT}.{n}" for n in ("list_queues", "list_jobs", "job_info", "list_workers")}


def role_of(endpoint: str) -> str:
    """The role an rq-dashboard endpoint needs: admin for its actions, read for the rest."""
    return "admin" if endpoint in MUTATING else "read"


def install(app: Flask) -> None:
    """The guards, as request hooks (rq-dashboard's views are its own): authentication first of all the
    app's hooks, so that nothing about a job or a queue is told to a caller who may not ask."""
    app.before_request(authenticate)
    hooks = app.before_request_funcs[None]
    hooks.insert(0, hooks.pop())
    app.before_request(refuse_unsafe_actions)
    app.before_request(check_arguments)
    app.register_error_handler(HTTPException, errors)


def authenticate() -> BaseResponse | None:
    if request.blueprint != BLUEPRINT or request.endpoint is None:
        return None
    return auth.auth_of(current_app).check(role_of(request.endpoint))


def _refuse(status: int, error: str, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps({"status": "ERROR", "error": error})
    return Response(body + "\n", status, headers, mimetype="application/json")


def refuse_unsafe_actions() -> BaseResponse | None:
    """An action answers POST only, and only from this dashboard's pages."""
    if request.endpoint not in MUTATING:
        return None
    if request.method != "POST":
        return _refuse(405, "this route changes state: POST only", {"Allow": "POST"})
    if not security.is_same_origin(request.headers, request.host):
        return _refuse(403, "refused: the request does not come from this dashboard's pages")
    return None


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
    if registry_name is not None and registry_name not in views.REGISTRIES:
        abort(404, f"no registry {registry_name}: one of {', '.join(views.REGISTRIES)}")
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
    last = max(1, ceil(views.count(queue_name, registry_name) / per_page))
    if page > last:
        abort(404, f"no page {page}: the last is {last}")


def errors(error: HTTPException) -> BaseResponse:
    """Errors as JSON for the dashboard's API and actions; as plain text (never rq-dashboard's or werkzeug's
    HTML) on every other route (the API answers problem+json instead: web.api.problems wraps this)."""
    response = error.get_response()
    if request.endpoint in _JSON:
        response.set_data(json.dumps({"status": "ERROR", "error": error.description}) + "\n")
        response.mimetype = "application/json"
    else:
        response.set_data(f"{error.code} {error.name}: {error.description}\n")
        response.mimetype = "text/plain"
    return response
