"""The web process: a Flask app with rq-dashboard mounted under /rq."""

from web.app import create_app

__all__ = ["create_app"]
