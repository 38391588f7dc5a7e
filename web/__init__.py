"""The web process: the API, the live pages, rq-dashboard under /rq and /metrics (web.app.create_app).

Nothing is imported here: the CLI imports web.wsgi for `refreshq demo --web` without loading Flask.
"""
