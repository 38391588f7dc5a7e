"""/api/v1/metrics, /health, /performance and /alerts: the observability reports (jobs.observe.report), as
`refreshq metrics`, `health`, `performance` and `alerts list --json` print them."""

from __future__ import annotations

from flask import Blueprint
from werkzeug.wrappers import Response as BaseResponse

from jobs.observe import report
from jobs.observe.health import CRITICAL
from web.api.bounds import takes
from web.api.context import as_json, conn, settings
from web.api.pagination import choice
from web.auth import guard


@takes("window")
def metrics() -> BaseResponse:
    window = choice("window", tuple(report.WINDOWS), "24h") or "24h"
    return as_json(report.metrics_report(conn(), settings(), window))


@takes()
def health() -> BaseResponse:
    """503 when critical, so a load balancer or an uptime check can watch the status code alone."""
    found = report.health_report(conn(), settings())
    return as_json(found, 503 if found["status"] == CRITICAL else 200, {"Cache-Control": "no-store"})


@takes()
def performance() -> BaseResponse:
    return as_json(report.performance_report(conn(), settings()))


@takes()
def alerts() -> BaseResponse:
    return as_json(report.alerts_list(conn(), settings()))


def register(api: Blueprint) -> None:
    api.add_url_rule("/metrics", view_func=guard("read")(metrics))
    api.add_url_rule("/health", view_func=guard("read")(health))
    api.add_url_rule("/performance", view_func=guard("read")(performance))
    api.add_url_rule("/alerts", view_func=guard("read")(alerts))
