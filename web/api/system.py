"""/api/v1/workers and /api/v1/queues: what runs the jobs, and how much waits (depth, oldest job's age); the
workers' actions (suspend, resume, drain, stop, scale) through jobs.workforce, as `refreshq workers` does."""

from __future__ import annotations

from typing import Any

from flask import Blueprint
from werkzeug.wrappers import Response as BaseResponse

from jobs import workforce
from jobs.errors import ValidationError
from jobs.info import queue_report, worker_report
from web.api.bounds import takes
from web.api.context import as_json, body, conn
from web.api.pagination import page_args, slice_of
from web.auth import guard


@takes("page", "page_size")
def workers() -> BaseResponse:
    page, page_size = page_args(default_size=100)
    db = conn()
    listed = slice_of(worker_report(db), page, page_size)
    return as_json({**listed, "pools": workforce.list_pools(db), "suspended": workforce.suspensions(db)})


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


@takes()
def suspend() -> BaseResponse:
    data = body(("queues", "pool"))
    return as_json(workforce.suspend(conn(), _queues(data), _text(data, "pool")))


@takes()
def resume() -> BaseResponse:
    data = body(("queues", "pool"))
    return as_json(workforce.resume(conn(), _queues(data), _text(data, "pool")))


@takes()
def drain() -> BaseResponse:
    data = body(("pool", "worker"))
    return as_json(workforce.drain(conn(), _text(data, "pool"), _text(data, "worker")))


@takes()
def stop() -> BaseResponse:
    data = body(("pool", "worker"))
    return as_json(workforce.stop(conn(), _text(data, "pool"), _text(data, "worker")))


@takes()
def scale() -> BaseResponse:
    data = body(("pool", "processes"), required=("pool", "processes"))
    processes = data["processes"]
    if not isinstance(processes, int) or isinstance(processes, bool):
        raise ValidationError("processes must be an integer")
    return as_json(workforce.scale(conn(), _text(data, "pool") or "", processes))


def register(api: Blueprint) -> None:
    api.add_url_rule("/workers", view_func=guard("read")(workers))
    api.add_url_rule("/queues", view_func=guard("read")(list_queues))
    for action in (suspend, resume, drain, stop, scale):
        api.add_url_rule(f"/workers/{action.__name__}", view_func=guard("admin")(action), methods=["POST"],
                         endpoint=f"workers_{action.__name__}")
