"""The live pages: server-rendered Jinja templates and one small vendored script (static/refreshq.js),
no build step and no CDN. Their actions call the API from the page (same origin, session cookie).
Each page's route and role are declared on its view (web.pages.views)."""

from __future__ import annotations

from flask import Flask


def install(app: Flask) -> None:
    from web.pages.views import pages

    app.register_blueprint(pages)
