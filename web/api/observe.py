"""/api/v1/metrics, /health, /performance and /alerts: the observability reports (jobs.observe.report), as
`refreshq metrics`, `health`, `performance` and `alerts list --json` print them."""

from __future__ import annotations

from werkzeug.wrappers import Response as BaseResponse

from jobs.observe import report
from jobs.observe.health import CRITICAL
from web.api.blueprint import api
from web.api.bounds import takes
from web.api.context import as_json, conn, settings
from web.api.pagination import choice
from web.auth import requires


@api.get("/metrics")
@requires("read")
@takes("window")
def metrics() -> BaseResponse:
    window = choice("window", tuple(report.WINDOWS), "24h") or "24h"
    return as_json(report.metrics_report(conn(), settings(), window))


@api.get("/health")
@requires("read")
@takes()
def health() -> BaseResponse:
    """503 when critical, so a load balancer or an uptime check can watch the status code alone."""
    found = report.health_report(conn(), settings())
    return as_json(found, 503 if found["status"] == CRITICAL else 200, {"Cache-Control": "no-store"})


@api.get("/performance")
@requires("read")
@takes()
def performance() -> BaseResponse:
    return as_json(report.performance_report(conn(), settings()))


@api.get("/alerts")
@requires("read")
@takes()
def alerts() -> BaseResponse:
    return as_json(report.alerts_list(conn(), settings()))
