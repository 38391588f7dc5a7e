"""/api/v1/workers and /api/v1/queues: what runs the jobs, and how much waits (depth, oldest job's age)."""

from __future__ import annotations

from flask import Blueprint
from werkzeug.wrappers import Response as BaseResponse

from jobs.info import queue_report, worker_report
from web.api.context import as_json, conn
from web.api.pagination import page_args, slice_of
from web.auth import guard


def workers() -> BaseResponse:
    page, page_size = page_args(default_size=100)
    return as_json(slice_of(worker_report(conn()), page, page_size))


def list_queues() -> BaseResponse:
    page, page_size = page_args(default_size=100)
    return as_json(slice_of(queue_report(conn()), page, page_size))


def register(api: Blueprint) -> None:
    api.add_url_rule("/workers", view_func=guard("read")(workers))
    api.add_url_rule("/queues", view_func=guard("read")(list_queues))
