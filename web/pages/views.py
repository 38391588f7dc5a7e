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
from web import auth, live, security
from web.api.context import conn, manager, settings
from web.api.pagination import choice, envelope, page_args

PAGE_SIZE = 20


def _render(template: str, **values: Any) -> str:
    return render_template(f"refreshq/{template}", principal=auth.current(), **values)


def index() -> str:
    status = choice("status", STATUSES)
    page, page_size = page_args(default_size=PAGE_SIZE)
    result = manager().list_tasks(status, page, page_size)
    items = [live.view(s, settings().stall_seconds) for s in result["items"]]
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


def refresh(task_id: str) -> str:
    state = live.payload(manager(), task_id, settings().stall_seconds)
    principal = auth.current()
    may_act = principal.may("admin") or (principal.may("operate") and state["task"]["owner"] == principal.user)
    return _render("refresh.html", task=state["task"], provinces=state["provinces"], may_act=may_act,
                   stall_seconds=settings().stall_seconds, pacing_text=pacing_text(state["task"]["upstream_pacing"]))


def tasks() -> str:
    return _render("tasks.html", tasks=[summary(d) for d in configured_tasks(settings())])


def task(name: str) -> str:
    definition = configured_tasks(settings()).get(name)
    total, entries = history.page(conn(), name, 50, 0)
    return _render("task.html", task=summary(definition), total=total, entries=entries)


def schedule_list() -> str:
    db = conn()
    return _render("schedules.html", schedules=[schedules.describe(db, n) for n in schedules.names(db)])


def failed() -> str:
    from web.api.failed import list_failed

    page = list_failed().get_json()
    return _render("failed.html", page=page)


def workers() -> str:
    return _render("workers.html", queues=queue_report(conn()), workers=worker_report(conn()))


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


def logout() -> BaseResponse:
    from flask import session

    if not security.is_same_origin(request.headers, request.host):
        return BaseResponse("403 Forbidden\n", 403, mimetype="text/plain")
    session.clear()
    return redirect(url_for("pages.login"), 303)


def blueprint() -> Blueprint:
    pages = Blueprint("pages", __name__, template_folder="templates", static_folder="static",
                      static_url_path="/assets")
    read = auth.guard("read")
    pages.add_url_rule("/", view_func=read(index), endpoint="index")
    pages.add_url_rule("/refreshes/<task_id>", view_func=read(refresh), endpoint="refresh")
    pages.add_url_rule("/tasks", view_func=read(tasks), endpoint="tasks")
    pages.add_url_rule("/tasks/<name>", view_func=read(task), endpoint="task")
    pages.add_url_rule("/schedules", view_func=read(schedule_list), endpoint="schedules")
    pages.add_url_rule("/failed", view_func=read(failed), endpoint="failed")
    pages.add_url_rule("/workers", view_func=read(workers), endpoint="workers")
    pages.add_url_rule("/health", view_func=read(health), endpoint="health")
    pages.add_url_rule("/login", view_func=login, methods=["GET", "POST"], endpoint="login")
    pages.add_url_rule("/logout", view_func=logout, methods=["POST"], endpoint="logout")
    return pages
