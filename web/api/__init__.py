"""The HTTP API under /api/v1: JSON, errors as problem+json, lists paginated, every list from an index.

One module per resource; each declares its routes on web.api.blueprint's `api`, beside their views.
"""

from __future__ import annotations

from flask import Flask


def install(app: Flask) -> None:
    from web.api import bounds, data, dead_letters, observe, problems, refreshes, schedules, system, tasks  # noqa: F401 (their routes)
    from web.api.blueprint import PREFIX, api

    app.register_blueprint(api)
    problems.install(app, PREFIX + "/")
    bounds.install(app, PREFIX + "/")
