"""/api/v1/dead-letters: the dead-letter registry (jobs the retry sweeper gave up on). /api/v1/failed, its
previous path, is kept as an alias of each route (web.api.blueprint.alias)."""

from __future__ import annotations

from typing import Any

from werkzeug.wrappers import Response as BaseResponse

from jobs.duties import dead_letters
from web.api.blueprint import alias, api
from web.api.bounds import takes
from web.api.context import as_json, conn
from web.api.pagination import envelope, page_args
from web.auth import requires


def page_of_dead_letters() -> dict[str, Any]:
    """The page of dead letters `?page=` asks for, newest first, from the registry's sorted set (this list
    and the /dead-letters page)."""
    page, page_size = page_args()
    start = (page - 1) * page_size
    total, entries = dead_letters.page(conn(), start, start + page_size - 1, newest_first=True)
    return envelope(entries, total, page, page_size)


@api.get("/dead-letters", endpoint="list_dead_letters")
@alias("GET", "/failed", of="/dead-letters", endpoint="list_failed")
@requires("read")
@takes("page", "page_size")
def list_dead() -> BaseResponse:
    return as_json(page_of_dead_letters())


@api.get("/dead-letters/<job_id>", endpoint="get_dead_letter")
@alias("GET", "/failed/<job_id>", of="/dead-letters/<job_id>", endpoint="get_failed")
@requires("read")
@takes()
def get_dead(job_id: str) -> BaseResponse:
    return as_json(dead_letters.show_dead(conn(), job_id))


@api.post("/dead-letters/<job_id>/retry", endpoint="retry_dead_letter")
@alias("POST", "/failed/<job_id>/retry", of="/dead-letters/<job_id>/retry", endpoint="retry_failed")
@requires("admin")
@takes()
def retry(job_id: str) -> BaseResponse:
    return as_json({"job_id": job_id, "outcome": dead_letters.retry_dead(conn(), job_id)})


@api.delete("/dead-letters", endpoint="purge_dead_letters")
@alias("DELETE", "/failed", of="/dead-letters", endpoint="purge_failed")
@requires("admin")
@takes()
def purge() -> BaseResponse:
    return as_json({"purged": dead_letters.purge_dead(conn())})
