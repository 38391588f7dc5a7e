"""/api/v1/workers and /api/v1/queues: what runs the jobs, and how much waits (depth, oldest job's age); the
workers' actions (suspend, resume, drain, stop, scale) through jobs.workforce, as `refreshq workers` does."""

from __future__ import annotations

from typing import Any

from werkzeug.wrappers import Response as BaseResponse

from jobs import workforce
from jobs.errors import ValidationError
from jobs.info import queue_report, worker_report
from web.api.blueprint import api
from web.api.bounds import takes
from web.api.context import as_json, body, conn
from web.api.pagination import page_args, slice_of
from web.auth import requires


@api.get("/workers")
@requires("read")
@takes("page", "page_size")
def workers() -> BaseResponse:
    page, page_size = page_args(default_size=100)
    db = conn()
    listed = slice_of(worker_report(db), page, page_size)
    return as_json({**listed, "pools": workforce.list_pools(db), "suspended": workforce.suspensions(db)})


@api.get("/queues")
@requires("read")
@takes("page", "page_size")
def list_queues() -> BaseResponse:
    page, page_size = page_args(default_size=100)
    return as_json(slice_of(queue_report(conn()), page, page_size))


def _text(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is not None and (not isinstance(value, str) or not value):
        raise ValidationError(f"{name} must be a non-empty string")
    return value


def _queues(data: dict[str, Any]) -> list[str]:
    value = data.get("queues", [])
    if not isinstance(value, list) or not all(isinstance(q, str) for q in value):
        raise ValidationError("queues must be a list of queue names")
    return value


@api.post("/workers/suspend", endpoint="workers_suspend")
@requires("admin")
@takes()
def suspend() -> BaseResponse:
    data = body(("queues", "pool"))
    return as_json(workforce.suspend(conn(), _queues(data), _text(data, "pool")))


@api.post("/workers/resume", endpoint="workers_resume")
@requires("admin")
@takes()
def resume() -> BaseResponse:
    data = body(("queues", "pool"))
    return as_json(workforce.resume(conn(), _queues(data), _text(data, "pool")))


@api.post("/workers/drain", endpoint="workers_drain")
@requires("admin")
@takes()
def drain() -> BaseResponse:
    data = body(("pool", "worker"))
    return as_json(workforce.drain(conn(), _text(data, "pool"), _text(data, "worker")))


@api.post("/workers/stop", endpoint="workers_stop")
@requires("admin")
@takes()
def stop() -> BaseResponse:
    data = body(("pool", "worker"))
    return as_json(workforce.stop(conn(), _text(data, "pool"), _text(data, "worker")))


@api.post("/workers/scale", endpoint="workers_scale")
@requires("admin")
@takes()
def scale() -> BaseResponse:
    data = body(("pool", "processes"), required=("pool", "processes"))
    processes = data["processes"]
    if not isinstance(processes, int) or isinstance(processes, bool):
        raise ValidationError("processes must be an integer")
    return as_json(workforce.scale(conn(), _text(data, "pool") or "", processes))
