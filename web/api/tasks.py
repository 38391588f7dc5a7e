"""/api/v1/tasks and /api/v1/runs: named tasks (seed 001), running one now, its history, a run's state."""

from __future__ import annotations

import re
from typing import Any

from flask import request, url_for
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.serializers import JSONSerializer
from werkzeug.wrappers import Response as BaseResponse

from jobs.errors import TaskArgumentsError, TaskNotFoundError
from jobs.named import history, runs
from jobs.named.catalog import TaskCatalog, configured_tasks, summary
from web import auth
from web.api.blueprint import api
from web.api.bounds import takes
from web.api.context import as_json, body, conn, settings
from web.api.pagination import envelope, page_args, slice_of, whole
from web.auth import requires

MAX_HISTORY_LIMIT = 100


def _catalog() -> TaskCatalog:
    return configured_tasks(settings())


@api.get("/tasks")
@requires("read")
@takes("category", "tag", "page", "page_size")
def list_tasks() -> BaseResponse:
    page, page_size = page_args(default_size=100)
    rows = [summary(d) for d in _catalog().select(request.args.get("category"), request.args.get("tag"))]
    return as_json(slice_of(rows, page, page_size))


@api.get("/tasks/<name>")
@requires("read")
@takes()
def get_task(name: str) -> BaseResponse:
    definition = _catalog().get(name)
    total, _ = history.page(conn(), name, 1, 0)
    return as_json({**summary(definition), "attempts": total})


@api.post("/tasks/<name>/run")
@requires("operate")
@takes()
def run_task(name: str) -> BaseResponse:
    definition = _catalog().get(name)
    args: Any = body(("args",)).get("args", [])
    if isinstance(args, list):
        positional, keywords = args, {}
    elif isinstance(args, dict):
        positional, keywords = [], args
    else:
        raise TaskArgumentsError("args must be a JSON array (positional) or object (keyword arguments)")
    job_id = runs.enqueue_task(conn(), definition, positional, keywords, owner=auth.current().owner,
                               modules=settings().server.task_modules)
    return as_json(_run(job_id), 201, {"Location": url_for("api.get_run", run_id=job_id)})


@api.get("/tasks/<name>/history")
@requires("read")
@takes("limit", "offset")
def task_history(name: str) -> BaseResponse:
    _catalog().get(name)
    limit = whole("limit", 20, 1, MAX_HISTORY_LIMIT)
    offset = whole("offset", 0, 0, 10**12)
    total, entries = history.page(conn(), name, limit, offset)
    result = envelope(entries, total, offset // limit + 1, limit)
    return as_json({**result, "limit": limit, "offset": offset})


def _run(job_id: str) -> dict[str, Any]:
    try:
        job = Job.fetch(job_id, connection=conn(), serializer=JSONSerializer)
    except NoSuchJobError:
        raise TaskNotFoundError(f"no run {job_id}") from None
    if job.func_name not in runs.RUN_FUNCS:
        raise TaskNotFoundError(f"no run {job_id} (that job is not a named-task run)")
    status = job.get_status(refresh=False)
    result = job.latest_result()
    failed = result is not None and result.type != result.Type.SUCCESSFUL
    return {
        "id": job.id, "task": job.args[0], "owner": job.meta.get("owner"), "state": status.value if status else None,
        "attempt": job.meta.get("attempt", 0), "queue": job.origin,
        "enqueued_at": _iso(job.enqueued_at), "started_at": _iso(job.started_at), "ended_at": _iso(job.ended_at),
        "result": result.return_value if result is not None and not failed else None,
        "error": _last_line(result.exc_string) if result is not None and failed else None,
        "schedule": job.meta.get("schedule"), "workflow": job.meta.get("workflow"),
    }


_RAISED = re.compile(r"^[A-Za-z_][\w.]*: ", re.M)


def _last_line(text: str | None) -> str | None:
    """`ValueError: message` from a traceback, the whole message even when it spans lines."""
    found = list(_RAISED.finditer(text or ""))
    return (text or "")[found[-1].start():].rstrip("\n") if found else None


def _iso(moment: Any) -> str | None:
    return moment.isoformat(timespec="seconds") if moment is not None else None


@api.get("/runs/<run_id>")
@requires("read")
@takes()
def get_run(run_id: str) -> BaseResponse:
    return as_json(_run(run_id))
