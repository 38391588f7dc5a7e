"""The pages' views: each renders from the same functions the API serves, and the script keeps them live."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, current_app, redirect, render_template, request, url_for
from werkzeug.exceptions import TooManyRequests
from werkzeug.wrappers import Response as BaseResponse

from jobs.errors import RefreshqError
from jobs.info import queue_report, worker_report
from jobs.named import history, schedules
from jobs.named.catalog import configured_tasks, summary
from jobs.pacing import pacing_text
from jobs.refresh.provinces import upstream_provinces
from jobs.statuses import TASK_STATUSES as STATUSES
from jobs.upstream.identity import label
from web import auth, live, security
from web.api.bounds import takes
from web.api.context import conn, manager, settings
from web.api.dead_letters import page_of_dead_letters
from web.api.pagination import choice, envelope, page_args
from web.auth import public, requires

PAGE_SIZE = 20

pages = Blueprint("pages", __name__, template_folder="templates", static_folder="static", static_url_path="/assets")


def _render(template: str, **values: Any) -> str:
    return render_template(f"refreshq/{template}", principal=auth.current(), **values)


@pages.get("/")
@requires("read")
def index() -> str:
    status = choice("status", STATUSES)
    page, page_size = page_args(default_size=PAGE_SIZE)
    result = manager().list_tasks(status, page, page_size)
    items = [live.view(s, settings().health.stall_seconds) for s in result["items"]]
    provinces: list[Any] = []
    provinces_error = None
    if auth.current().may("operate"):
        try:
            provinces = upstream_provinces(conn(), settings(), manager().upstream)
        except (RefreshqError, OSError) as exc:
            provinces_error = f"the upstream's provinces are not available: {exc}"
    list_url = url_for("api.list_refreshes", status=status or None, page=page, page_size=page_size)
    return _render("index.html", page=envelope(items, result["total"], page, page_size), status=status,
                   statuses=STATUSES, provinces=provinces, provinces_error=provinces_error, list_url=list_url)


@pages.get("/refreshes/<task_id>")
@requires("read")
def refresh(task_id: str) -> str:
    state = live.payload(manager(), task_id, settings().health.stall_seconds)
    principal = auth.current()
    may_act = principal.may("admin") or (principal.may("operate") and state["task"]["owner"] == principal.user)
    return _render("refresh.html", task=state["task"], provinces=state["provinces"], may_act=may_act,
                   stall_seconds=settings().health.stall_seconds,
                   pacing_text=pacing_text(state["task"]["upstream_pacing"]))


@pages.get("/tasks")
@requires("read")
def tasks() -> str:
    return _render("tasks.html", tasks=[summary(d) for d in configured_tasks(settings())])


@pages.get("/tasks/<name>")
@requires("read")
def task(name: str) -> str:
    definition = configured_tasks(settings()).get(name)
    total, entries = history.page(conn(), name, 50, 0)
    return _render("task.html", task=summary(definition), total=total, entries=entries)


@pages.get("/schedules", endpoint="schedules")
@requires("read")
def schedule_list() -> str:
    db = conn()
    return _render("schedules.html", schedules=[schedules.describe(db, n) for n in schedules.names(db)])


@pages.get("/dead-letters")
@pages.get("/failed", endpoint="failed")  # the page's previous path, kept as an alias
@requires("read")
@takes("page", "page_size")
def dead_letters() -> str:
    return _render("dead_letters.html", page=page_of_dead_letters())


@pages.get("/workers")
@requires("read")
def workers() -> str:
    return _render("workers.html", queues=queue_report(conn()), workers=worker_report(conn()))


@pages.get("/health")
@requires("read")
def health() -> str:
    from jobs.observe import report

    return _render("health.html", health=report.health_report(conn(), settings()),
                   alerts=report.alerts_list(conn(), settings()))


def _local_path(target: str | None) -> str:
    """Only a path on this site (no scheme, no host, not `//host`): nothing to redirect elsewhere."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return url_for("pages.index")
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else url_for("pages.index")


@pages.route("/login", methods=["GET", "POST"])
@public
def login() -> BaseResponse | str:
    guard = auth.auth_of(current_app)
    next_page = _local_path(request.values.get("next"))
    if request.method == "GET":
        return render_template("refreshq/login.html", principal=None, next=next_page, error=None)
    if not security.is_same_origin(request.headers, request.host):
        return BaseResponse("403 Forbidden: sign in from this site's page\n", 403, mimetype="text/plain")
    try:
        if guard.sign_in(request.form.get("password"), request.form.get("token")):
            return redirect(next_page, 303)
    except TooManyRequests as refused:  # web.throttle: the page, with how long to wait
        return BaseResponse(render_template("refreshq/login.html", principal=None, next=next_page,
                                            error=refused.description), 429, refused.get_headers())
    return BaseResponse(render_template("refreshq/login.html", principal=None, next=next_page,
                                        error="wrong password or token"), 401)


@pages.post("/logout")
@public
def logout() -> BaseResponse:
    from flask import session

    if not security.is_same_origin(request.headers, request.host):
        return BaseResponse("403 Forbidden\n", 403, mimetype="text/plain")
    session.clear()
    return redirect(url_for("pages.login"), 303)


@pages.app_template_filter("upstream_label")
def _upstream_label(spec: dict[str, Any] | None) -> str:
    return label(spec) if spec else ""
