"""The API's blueprint, /api/v1: every resource module of web.api declares its routes on it, beside their
views, with the role a view requires (web.auth.requires) and the query parameters it takes
(web.api.bounds.takes):

    @api.post("/refreshes/<task_id>/cancel", endpoint="cancel_refresh")
    @requires("operate")
    @takes()
    def cancel(task_id: str) -> BaseResponse: ...

An old path kept for its clients is declared on the same view with `alias` (listed in ALIASES).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask import Blueprint

PREFIX = "/api/v1"

api = Blueprint("api", __name__, url_prefix=PREFIX)

F = TypeVar("F", bound=Callable[..., Any])
# (method, path) of each alias -> the path it is an alias of; the alias serves the same view, rule and all.
ALIASES: dict[tuple[str, str], str] = {}


def alias(method: str, rule: str, of: str, endpoint: str) -> Callable[[F], F]:
    """Serve the view also at `rule` (an old path kept as an alias of `of`), under its own `endpoint`."""
    def register(view: F) -> F:
        api.add_url_rule(rule, endpoint=endpoint, view_func=view, methods=[method])
        ALIASES[(method, PREFIX + rule)] = PREFIX + of
        return view
    return register
