"""The HTTP API under /api/v1: JSON, errors as problem+json, lists paginated, every list from an index.

One module per resource; each registers its routes on the blueprint here.
"""

from __future__ import annotations

from flask import Blueprint, Flask

PREFIX = "/api/v1"


def blueprint() -> Blueprint:
    from web.api import data, failed, observe, refreshes, schedules, system, tasks

    api = Blueprint("api", __name__, url_prefix=PREFIX)
    for module in (refreshes, data, tasks, schedules, failed, system, observe):
        module.register(api)
    return api


def install(app: Flask) -> None:
    from web.api import bounds, problems

    app.register_blueprint(blueprint())
    problems.install(app, PREFIX + "/")
    bounds.install(app, PREFIX + "/")
