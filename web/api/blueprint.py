"""The API's blueprint, /api/v1: every resource module of web.api declares its routes on it, beside their
views, with the role a view requires (web.auth.requires) and the query parameters it takes
(web.api.bounds.takes):

    @api.post("/refreshes/<task_id>/cancel", endpoint="cancel_refresh")
    @requires("operate")
    @takes()
    def cancel(task_id: str) -> BaseResponse: ...
"""

from __future__ import annotations

from flask import Blueprint

PREFIX = "/api/v1"

api = Blueprint("api", __name__, url_prefix=PREFIX)
