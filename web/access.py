"""Every route's access rule, read back from the app's url_map: the role its view requires
(web.auth.requires), what a view open to anyone or checking its caller itself declares (web.auth.public,
web.auth.declares), and for rq-dashboard's routes the role its guard gives them (web.dashboard.guards).
The pages' assets are public. create_app refuses to start with a route that has no rule, so no view is
served without one.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask

from web.auth import ACCESS, PUBLIC
from web.dashboard import guards
from web.dashboard.views import BLUEPRINT as DASHBOARD

# Flask's own views for static files: the pages' script and stylesheet, and the app's (empty: web.app).
PUBLIC_ENDPOINTS = frozenset({"pages.static", "static"})
IMPLIED_METHODS = frozenset({"HEAD", "OPTIONS"})  # Flask answers them for every route


@dataclass(frozen=True, order=True)
class Route:
    """One method of one URL rule, and who may call it."""

    rule: str
    method: str
    endpoint: str
    access: str | None  # None: no rule declared (create_app refuses to start)


def access_of(app: Flask, endpoint: str) -> str | None:
    if endpoint.startswith(DASHBOARD + "."):
        return guards.role_of(endpoint)
    if endpoint in PUBLIC_ENDPOINTS:
        return PUBLIC
    found = getattr(app.view_functions.get(endpoint), ACCESS, None)
    return found if isinstance(found, str) else None


def table(app: Flask) -> list[Route]:
    """Every route the app serves (HEAD and OPTIONS aside), sorted by rule and method."""
    return sorted(
        Route(rule.rule, method, rule.endpoint, access_of(app, rule.endpoint))
        for rule in app.url_map.iter_rules()
        for method in (rule.methods or set()) - IMPLIED_METHODS
    )


def check(app: Flask) -> None:
    """Raise RuntimeError naming every route without an access rule."""
    missing = [f"{route.method} {route.rule} ({route.endpoint})" for route in table(app) if route.access is None]
    if missing:
        raise RuntimeError("routes without an access rule (web.auth.requires, public or declares on the view): "
                           + ", ".join(missing))
