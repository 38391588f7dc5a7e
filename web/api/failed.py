"""/api/v1/failed: the dead-letter registry (jobs the retry sweeper gave up on)."""

from __future__ import annotations

from flask import Blueprint
from werkzeug.wrappers import Response as BaseResponse

from jobs.duties import dead_letters
from web.api.bounds import takes
from web.api.context import as_json, conn
from web.api.pagination import envelope, page_args
from web.auth import guard


@takes("page", "page_size")
def list_failed() -> BaseResponse:
    """A page of dead jobs, newest first, from the registry's sorted set."""
    page, page_size = page_args()
    start = (page - 1) * page_size
    total, entries = dead_letters.page(conn(), start, start + page_size - 1, newest_first=True)
    return as_json(envelope(entries, total, page, page_size))


@takes()
def get_failed(job_id: str) -> BaseResponse:
    return as_json(dead_letters.show_dead(conn(), job_id))


@takes()
def retry(job_id: str) -> BaseResponse:
    return as_json({"job_id": job_id, "outcome": dead_letters.retry_dead(conn(), job_id)})


@takes()
def purge() -> BaseResponse:
    return as_json({"purged": dead_letters.purge_dead(conn())})


def register(api: Blueprint) -> None:
    api.add_url_rule("/failed", view_func=guard("read")(list_failed))
    api.add_url_rule("/failed", view_func=guard("admin")(purge), methods=["DELETE"], endpoint="purge_failed")
    api.add_url_rule("/failed/<job_id>", view_func=guard("read")(get_failed))
    api.add_url_rule("/failed/<job_id>/retry", view_func=guard("admin")(retry), methods=["POST"],
                     endpoint="retry_failed")
